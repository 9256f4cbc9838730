"""`refinery config show|check`: the merged, validated config a job would run with."""

from __future__ import annotations

import argparse

import yaml

from jobs.batch import BATCH_JOBS, load_batch_config
from jobs.commands.common import add_config_flags
from refinery.redact import redact


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="show or check a job config")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_text in (
        ("show", "print the merged config (profile + file + --set) as YAML"),
        ("check", "validate a config; exit 2 with the file and key path on error"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument("job", choices=sorted(BATCH_JOBS), help="which job's config model to use")
        add_config_flags(sub)
        sub.set_defaults(func=_show if action == "show" else _check)


def _show(args: argparse.Namespace) -> int:
    cfg = load_batch_config(BATCH_JOBS[args.job], args.config, args.profile, args.overrides)
    print(yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    load_batch_config(BATCH_JOBS[args.job], args.config, args.profile, args.overrides)
    print(f"{args.config or BATCH_JOBS[args.job].default_config}: ok")
    return 0
