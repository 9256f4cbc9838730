"""The CLI's subcommands: each module has `register(subparsers)` that sets `func`."""

from jobs.commands import bench, config, demo, model, run, serve

COMMANDS = [demo, run, serve, config, model, bench]
