"""The CLI's subcommands: each module has `register(subparsers)` that sets `func`."""

from jobs.commands import bench, config, demo, model, run

COMMANDS = [demo, run, config, model, bench]
