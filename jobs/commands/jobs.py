"""`refinery jobs list|status|logs|stop`: jobs on a running cluster (Ray's Jobs API)."""

from __future__ import annotations

import argparse
import json
import sys

from jobs.commands.common import add_address_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("jobs", help="list, inspect, follow or stop cluster jobs")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every job the cluster knows, newest last")
    add_address_flag(listing)
    listing.set_defaults(func=_list)
    for name, func, help_text in (
        ("status", _status, "one job's status and details (JSON)"),
        ("logs", _logs, "one job's logs"),
        ("stop", _stop, "stop a running job"),
    ):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("job_id", metavar="ID")
        add_address_flag(sub)
        sub.set_defaults(func=func)
        if name == "logs":
            sub.add_argument("--follow", action="store_true", help="until the job ends")


def _list(args: argparse.Namespace) -> int:
    from jobs.submit import connect, job_summary

    infos = sorted(connect(args.address).list_jobs(), key=lambda info: info.start_time or 0)
    for info in infos:
        summary = job_summary(info)
        print(f"{summary['submission_id']}  {summary['status']:<9}  {summary['entrypoint']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from jobs.submit import connect, job_summary

    info = connect(args.address).get_job_info(args.job_id)
    print(json.dumps(job_summary(info), indent=2))
    return 0


def _logs(args: argparse.Namespace) -> int:
    from jobs.submit import connect, follow_logs

    client = connect(args.address)
    if not args.follow:
        print(client.get_job_logs(args.job_id), end="")
        return 0
    status = follow_logs(client, args.job_id, lambda text: print(text, end="", flush=True))
    print(f"{args.job_id}: {status}", file=sys.stderr)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from jobs.submit import connect

    stopped = connect(args.address).stop_job(args.job_id)
    print(f"{args.job_id}: {'stopping' if stopped else 'not running'}")
    return 0
