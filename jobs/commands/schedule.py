"""`refinery schedule add|apply|list|remove|pause|resume|run-now|history|show`: cron schedules of
batch jobs, run by the scheduler actor inside the cluster (jobs/schedule/actor.py); the CLI only
asks it, so schedules fire with no CLI running."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from jobs.batch import BATCH_JOBS
from refinery.config import ConfigError, load_runtime, validate

FILE_DEFAULT = "configs/schedules.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule", help="cron schedules of batch jobs, fired by a scheduler in the cluster"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add (or replace) a schedule")
    add.add_argument("name", metavar="NAME", help="lowercase letters, digits and '-'")
    add.add_argument("--job", required=True, choices=sorted(BATCH_JOBS), help="the batch job")
    add.add_argument("--cron", required=True, help='five cron fields, e.g. "0 2 * * *"')
    add.add_argument("--tz", default="UTC", help="IANA time zone of the cron fields (default UTC)")
    add.add_argument("--config", default=None, help="job config YAML (default: the job's own)")
    add.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one job config value (repeatable)",
    )
    add.add_argument(
        "--grace", default=None, help="how late a fire may still run, e.g. 30m (default 1h)"
    )
    add.set_defaults(func=_add)

    apply = actions.add_parser("apply", help="add or update the schedules a YAML file declares")
    apply.add_argument("--file", default=FILE_DEFAULT, help=f"default: {FILE_DEFAULT}")
    apply.add_argument(
        "--dry-run", action="store_true", help="check the file and the job configs, apply nothing"
    )
    apply.set_defaults(func=_apply)

    listing = actions.add_parser("list", help="every schedule: next fire, last run")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)

    for name, method, help_text in (
        ("remove", "remove", "forget a schedule and its history (a running job goes on)"),
        ("pause", "pause", "stop firing; fires during the pause are not caught up"),
        ("resume", "resume", "fire again, from the next fire on"),
        ("run-now", "run_now", "one run now (skipped while the previous run goes on)"),
    ):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("name", metavar="NAME")
        sub.set_defaults(func=lambda args, method=method: _verb(args, method))

    history = actions.add_parser("history", help="the schedule's runs: fire, start, end, status")
    history.add_argument("name", metavar="NAME")
    history.add_argument("--limit", type=int, default=20, help="the newest N (default 20)")
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=_history)

    show = actions.add_parser(
        "show", help="a schedule, its next fires, and as a crontab entry and a RayCronJob"
    )
    show.add_argument("name", metavar="NAME")
    show.add_argument(
        "--file", default=None, help="read the schedule from this YAML, not from the cluster"
    )
    only = show.add_mutually_exclusive_group()
    only.add_argument("--crontab", action="store_true", help="only the crontab entry")
    only.add_argument("--manifest", action="store_true", help="only the RayCronJob manifest")
    show.add_argument(
        "--cluster", default="refinery", help="the RayCluster (ray.io/cluster label) to run on"
    )
    show.set_defaults(func=_show)

    for sub in actions.choices.values():
        sub.add_argument(
            "--profile",
            default=None,
            help="runtime profile: local | cluster | FILE (default: cluster when RAY_ADDRESS "
            "is set, else local); also the job configs' profile",
        )
        sub.add_argument(
            "--state", default=None, help="where schedules are kept; default STORAGE_ROOT/schedules"
        )


def _scheduler(args: argparse.Namespace) -> Any:
    from jobs.schedule.actor import start_scheduler
    from refinery import storage
    from refinery.ray_runtime import attach_ray

    runtime = load_runtime(args.profile)
    attach_ray(runtime.ray)
    root = args.state or f"{runtime.storage.root}/schedules"
    root = root if storage.is_uri(root) else os.path.abspath(root)
    scheduler, in_use = start_scheduler(root)
    if in_use != root:
        print(f"refinery: the running scheduler keeps its state in {in_use}", file=sys.stderr)
    return scheduler


def _ask(args: argparse.Namespace, method: str, *values: Any) -> Any:
    import ray

    return ray.get(getattr(_scheduler(args), method).remote(*values))


def _answer(reply: dict[str, Any]) -> Any:
    if "error" in reply:
        raise SystemExit(f"refinery: {reply['error']}")
    return reply["result"]


def _add(args: argparse.Namespace) -> int:
    from jobs.schedule.model import ScheduleSpec, resolve

    data = {
        "name": args.name,
        "job": args.job,
        "cron": args.cron,
        "tz": args.tz,
        "config": args.config,
        "set": args.overrides,
    }
    if args.grace is not None:
        data["grace"] = args.grace
    spec = validate(ScheduleSpec, data, "refinery schedule add")
    spec, job_config = resolve(spec, args.profile)
    result = _answer(_ask(args, "add", spec.model_dump(mode="json"), job_config))
    print(f"{spec.name}: {result['action']}")
    print(_describe(result["schedule"]))
    return 0


def _apply(args: argparse.Namespace) -> int:
    from jobs.schedule.model import load_schedule_file, resolve

    declared = load_schedule_file(args.file).schedules
    # Every schedule is checked before any is applied: a file applies whole or not at all.
    resolved = [resolve(spec, args.profile) for spec in declared]
    if args.dry_run:
        for spec, _ in resolved:
            print(f"{spec.name}: valid ({spec.job}, {spec.cron!r} in {spec.tz})")
        return 0
    import ray

    scheduler = _scheduler(args)
    for spec, job_config in resolved:
        reply = ray.get(scheduler.add.remote(spec.model_dump(mode="json"), job_config))
        print(f"{spec.name}: {_answer(reply)['action']}")
    declared_names = {spec.name for spec in declared}
    others = [
        s["name"]
        for s in ray.get(scheduler.list_schedules.remote())
        if s["name"] not in declared_names
    ]
    if others:
        print(f"not in {args.file}, left as they are: {', '.join(others)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    schedules = _ask(args, "list_schedules")
    if args.json:
        print(json.dumps(schedules, indent=2))
        return 0
    print(f"{'NAME':<24}{'JOB':<8}{'CRON':<16}{'TZ':<18}{'STATE':<8}{'NEXT FIRE':<27}LAST RUN")
    for s in schedules:
        spec, last = s["spec"], s["last_run"]
        state = "paused" if s["paused"] else "active"
        upcoming = s["next_fires"][0] if s["next_fires"] else "-"
        last_text = f"{last['status']} {_local(last['fire_time'], spec['tz'])}" if last else "-"
        print(
            f"{spec['name']:<24}{spec['job']:<8}{spec['cron']:<16}{spec['tz']:<18}{state:<8}"
            f"{upcoming:<27}{last_text}"
        )
    return 0


def _verb(args: argparse.Namespace, method: str) -> int:
    result = _answer(_ask(args, method, args.name))
    if method == "remove":
        print(f"{args.name}: removed")
    elif method == "run_now":
        print(_run_line(result, "UTC"))
    else:
        print(_describe(result))
    return 0


def _history(args: argparse.Namespace) -> int:
    summary = _answer(_ask(args, "show", args.name))
    runs = _answer(_ask(args, "history", args.name, args.limit))
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    tz = summary["spec"]["tz"]
    print(
        f"{'FIRE (' + tz + ')':<27}{'TRIGGER':<8}{'STATUS':<11}{'START':<27}{'END':<27}JOB / REASON"
    )
    for run in runs:
        print(_run_line(run, tz))
    return 0


def _show(args: argparse.Namespace) -> int:
    from jobs.schedule.export import crontab, raycronjob_yaml
    from jobs.schedule.model import ScheduleSpec, load_schedule_file

    if args.file:
        specs = {spec.name: spec for spec in load_schedule_file(args.file).schedules}
        if args.name not in specs:
            raise ConfigError(f"{args.file}: no schedule named {args.name!r}")
        spec, paused, summary = specs[args.name], False, None
    else:
        summary = _answer(_ask(args, "show", args.name))
        spec, paused = ScheduleSpec.model_validate(summary["spec"]), summary["paused"]
    manifest = raycronjob_yaml(spec, args.cluster, paused)
    if args.crontab:
        print(crontab(spec))
    elif args.manifest:
        print(manifest, end="")
    else:
        print(_describe(summary) if summary else _describe_spec(spec.model_dump(mode="json")))
        print(f"\n# crontab\n{crontab(spec)}\n\n{manifest}", end="")
    return 0


def _describe_spec(spec: dict[str, Any]) -> str:
    from jobs.schedule.model import format_duration

    lines = [
        f"schedule {spec['name']}: {spec['job']} at {spec['cron']!r} in {spec['tz']}, "
        f"grace {format_duration(spec['grace'])}",
        f"  config {spec['config'] or '(the job default)'}, profile {spec['profile'] or '-'}",
    ]
    lines += [f"  --set {item}" for item in spec["set"]]
    return "\n".join(lines)


def _describe(summary: dict[str, Any]) -> str:
    spec = summary["spec"]
    lines = [_describe_spec(spec)]
    lines.append(
        f"  {'paused' if summary['paused'] else 'active'}; next fires: "
        + (", ".join(summary["next_fires"]) or "-")
    )
    for label, key in (("last run", "last_run"), ("running", "active_run")):
        if summary.get(key):
            lines.append(f"  {label}: {_run_line(summary[key], spec['tz'])}")
    return "\n".join(lines)


def _run_line(run: dict[str, Any], tz: str) -> str:
    detail = run.get("job_id") or run.get("submission_id") or ""
    if run.get("reason"):
        detail = f"{detail}  {run['reason']}".strip()
    start, end = _local(run.get("start"), tz), _local(run.get("end"), tz)
    return (
        f"{_local(run['fire_time'], tz):<27}{run['trigger']:<8}{run['status']:<11}"
        f"{start:<27}{end:<27}{detail}"
    )


def _local(stamp: str | None, tz: str) -> str:
    if not stamp:
        return "-"
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(stamp).astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")
