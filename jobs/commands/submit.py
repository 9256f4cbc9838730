"""`refinery submit docs|logs|reindex`: a batch job on a running cluster through Ray's Jobs API."""

from __future__ import annotations

import argparse
import sys

from jobs.batch import BATCH_JOBS, load_batch_config
from jobs.commands.common import add_address_flag, add_config_flags, add_job_flags, apply_job_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit", help="submit a batch job to a Ray cluster (Jobs API; prints the job id)"
    )
    jobs = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    for job in BATCH_JOBS.values():
        sub = jobs.add_parser(job.name, help=job.description, description=job.description)
        add_config_flags(sub, job.default_config, default_profile="cluster")
        add_address_flag(sub)
        add_job_flags(sub, job.name)
        sub.add_argument(
            "--submission-id",
            help="the job's id; submitting an id again reports that job instead (safe retries)",
        )
        sub.add_argument(
            "--wait", action="store_true", help="follow the logs; exit with the job's status"
        )
        sub.set_defaults(func=_submit)


def _submit(args: argparse.Namespace) -> int:
    from jobs.submit import connect, follow_logs, submit

    job = BATCH_JOBS[args.job]
    cfg = load_batch_config(job, args.config, args.profile, args.overrides)
    apply_job_flags(args, cfg)
    client = connect(args.address)
    job_id, submitted = submit(client, job, cfg, args.submission_id)
    state = "submitted" if submitted else "already submitted"
    print(f"{job_id}: {state}", flush=True)
    if not args.wait:
        return 0
    status = follow_logs(client, job_id, lambda text: print(text, end="", flush=True))
    print(f"{job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1
