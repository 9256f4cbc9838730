"""`refinery canary rollout|set|abort|promote|rollback|status`: canary rollouts of a running Serve
application, run by its controller inside the cluster (serve/canary/controller.py); the CLI
only asks it, so a rollout goes on when the CLI exits."""

from __future__ import annotations

import argparse
import json
import os
import re

from refinery.config import load_runtime, validate
from refinery.ray_runtime import attach_ray
from serve.canary.rollout import RolloutConfig

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)")
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def duration(text: str) -> float:
    """Seconds from '90', '90s', '5m' or '1h'."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 90s, 5m or 1h")
    return float(match.group(1)) * SECONDS[match.group(2)]


def steps(text: str) -> list[int]:
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: weights like 1,5,10,25,50,100") from None


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: not JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'{text!r}: a JSON object like {{"max_p99_s": 1.5}}')
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "canary", help="canary rollouts of a served version: split, gates, rollback"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rollout = actions.add_parser(
        "rollout",
        help="start a rollout of VERSION: step by step while its gates pass, 0%% when one fails",
    )
    rollout.add_argument("--to", required=True, metavar="VERSION", help="the canary's version")
    rollout.add_argument(
        "--snapshot", default=None, help="the canary's index snapshot directory (path or URI)"
    )
    rollout.add_argument(
        "--llm",
        default=None,
        metavar="MODEL_ID",
        help="the LLM deployment that answers the canary's chat, completions and RAG (one of "
        "the application's llm_arms); clients keep naming the application's model",
    )
    rollout.add_argument("--steps", type=steps, default=None, help="weights, e.g. 1,5,10,25,50,100")
    rollout.add_argument("--interval", type=duration, default=None, help="least time per step")
    rollout.add_argument(
        "--min-requests", type=int, default=None, help="canary requests a step needs to pass"
    )
    rollout.add_argument(
        "--shadow",
        type=float,
        default=None,
        help="share (0-1) of searches mirrored to the other arm",
    )
    rollout.add_argument(
        "--gates",
        type=json_object,
        default=None,
        help='gate thresholds as JSON, e.g. {"max_p99_s": 1.5}',
    )
    rollout.add_argument(
        "--fault",
        type=json_object,
        default=None,
        help='faults injected into the canary, to rehearse a rollback, e.g. {"abort_percent": 20}',
    )
    rollout.set_defaults(func=_rollout)
    weight = actions.add_parser("set", help="set the canary's weight by hand (0-100)")
    weight.add_argument("weight", type=int)
    weight.set_defaults(func=lambda args: _verb(args, "set_weight", args.weight))
    for name, method, help_text in (
        ("abort", "abort", "stop the rollout: the canary to 0%%, stable alone"),
        ("promote", "promote", "make the canary stable now, skipping the remaining steps"),
        ("rollback", "rollback", "back to the old stable (also after a promotion)"),
    ):
        sub = actions.add_parser(name, help=help_text)
        sub.set_defaults(func=lambda args, method=method: _verb(args, method))
    status = actions.add_parser("status", help="weights, step, per-arm metrics, gates, shadows")
    status.add_argument("--json", action="store_true", help="the whole status as JSON")
    status.set_defaults(func=_status)
    for sub in (
        rollout,
        weight,
        status,
        *(actions.choices[n] for n in ("abort", "promote", "rollback")),
    ):
        sub.add_argument("--app", default="refinery", help="the Serve application's name")
        sub.add_argument("--profile", default=None, help="runtime profile: local | cluster | FILE")
        sub.add_argument(
            "--state", default=None, help="where rollouts are kept; default STORAGE_ROOT/canary"
        )


def _controller(args: argparse.Namespace, start: bool = False):
    from serve.canary.controller import find_controller, start_controller

    runtime = load_runtime(args.profile)
    attach_ray(runtime.ray)
    if start:
        from refinery.tracking import tracking_uri

        root = args.state or os.path.abspath(f"{runtime.storage.root}/canary")
        return start_controller(args.app, root, tracking_uri(runtime.tracking, runtime.storage))
    controller = find_controller(args.app)
    if controller is None:
        raise SystemExit(f"no canary controller runs for {args.app}: start a rollout first")
    return controller


def _rollout(args: argparse.Namespace) -> int:
    import ray

    config = {
        key: value
        for key, value in {
            "steps": args.steps,
            "interval_s": args.interval,
            "min_requests": args.min_requests,
            "shadow": args.shadow,
            "gates": args.gates,
            "fault": args.fault,
        }.items()
        if value is not None
    }
    # Checked here, so that a mistake is one clear line rather than the controller's error.
    validate(RolloutConfig, config, "canary rollout")
    controller = _controller(args, start=True)
    _print(ray.get(controller.rollout.remote(args.to, args.snapshot, config, llm=args.llm)))
    return 0


def _verb(args: argparse.Namespace, method: str, *values: object) -> int:
    import ray

    controller = _controller(args)
    _print(ray.get(getattr(controller, method).remote(*values)))
    return 0


def _status(args: argparse.Namespace) -> int:
    import ray

    status = ray.get(_controller(args).status.remote())
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print(status)
    return 0


def _print(status: dict) -> None:
    """The status as a reader wants it: what serves, where the rollout is, why."""
    print(status_table(status))


def status_table(status: dict) -> str:
    routing, rollout = status["routing"], status.get("rollout")
    canary = routing.get("canary")
    serving = f"canary {canary['version']} at {canary['weight']}%" if canary else "no canary"
    lines = [f"app {status['app']}: stable {routing['version']}, {serving}"]
    llms = [routing.get("llm"), canary and canary.get("llm")]
    if llms[1]:
        lines.append(f"llm: stable {llms[0]}, canary {llms[1]}")
    if rollout:
        steps = rollout["config"]["steps"]
        step = "set by hand" if rollout["step"] is None else f"step {rollout['step'] + 1}"
        lines.append(
            f"rollout {rollout['from_version']} -> {rollout['to']}: {rollout['status']}, "
            f"{step} of {','.join(map(str, steps))}, weight {rollout['weight']}%"
        )
        if status.get("reason"):
            lines.append(f"  now: {status['reason']}")
    lines.append(
        f"{'arm':<8}{'requests':>10}{'errors':>8}{'error %':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'tokens in':>11}{'tokens out':>12}"
    )
    for arm, c in status["arms"].items():
        rate, p50, p99 = _pct(c["error_rate"]), _ms(c["p50_s"]), _ms(c["p99_s"])
        lines.append(
            f"{arm:<8}{c['requests']:>10}{c['errors']:>8}{rate:>9}{p50:>9}{p99:>9}"
            f"{c.get('tokens_in', 0):>11}{c.get('tokens_out', 0):>12}"
        )
    for gate in status.get("gates") or []:
        lines.append(
            f"gate {gate['name']:<16} {gate['status']:<8} "
            f"value {_num(gate['value'])} threshold {_num(gate['threshold'])}"
        )
    for pair, agreement in ((status.get("shadow") or {}).get("agreement") or {}).items():
        shown = {k: v for k, v in agreement.items() if k in SHADOW_FIELDS and v is not None}
        lines.append(f"shadow {pair}: " + ", ".join(f"{k} {_num(v)}" for k, v in shown.items()))
    for event in (rollout or {}).get("history", [])[-5:]:
        lines.append(f"  {event['kind']:<9} {event['weight']:>3}%  {event['reason']}")
    return "\n".join(lines)


SHADOW_FIELDS = ("pairs", "overlap_at_10", "rank_correlation", "exact_match_rate", "length_ratio")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"
