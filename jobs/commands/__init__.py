"""The CLI's subcommands: each module has `register(subparsers)` that sets `func`."""

from jobs.commands import (
    bench,
    canary,
    config,
    demo,
    jobs,
    k8s,
    model,
    registry,
    run,
    schedule,
    serve,
    submit,
)

COMMANDS = [demo, run, submit, jobs, schedule, serve, canary, registry, config, k8s, model, bench]
