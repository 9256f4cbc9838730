"""`refinery run docs|logs|reindex`: one batch job from its YAML, with --input/--output
overriding it."""

from __future__ import annotations

import argparse
import json
import sys

from jobs.batch import BATCH_JOBS, load_batch_config, run_batch_job
from jobs.commands.common import add_config_flags, add_job_flags, apply_job_flags
from refinery.runstats import JobRejected


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a batch job on Ray (local or cluster)")
    jobs = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    for job in BATCH_JOBS.values():
        sub = jobs.add_parser(job.name, help=job.description, description=job.description)
        add_config_flags(sub, job.default_config)
        sub.add_argument("--input", help="input path, glob or URI (overrides the config)")
        sub.add_argument("--output", help="output directory or URI (overrides the config)")
        add_job_flags(sub, job.name)
        sub.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    job = BATCH_JOBS[args.job]
    cfg = load_batch_config(job, args.config, args.profile, args.overrides)
    # Plain strings, not YAML-parsed like --set values: a path named "2024" stays a path.
    if args.input:
        cfg.input = args.input
    if args.output:
        cfg.output = args.output
    apply_job_flags(args, cfg)
    try:
        stats = run_batch_job(job, cfg)
    except JobRejected as error:  # stats.json and the MLflow run hold the details
        print(f"refinery: {job.name}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(stats.to_dict(), indent=2, default=str))
    return 0
