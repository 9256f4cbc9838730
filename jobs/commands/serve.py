"""`refinery serve up|down|status`: the Serve application of configs/serve.yaml on Ray.

`up` deploys the config declaratively, as `serve deploy` does, so a later change of the
ingress's user_config (a snapshot, a canary's weight) applies without restarting a replica.
On a cluster (RAY_ADDRESS or --profile cluster) it deploys and returns once the applications
run; on a local Ray it keeps the process (and so the local Ray) alive until Ctrl-C, like
`serve run`. `status` and `down` join the running cluster (found as `ray status` finds it)
and never start one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from refinery.config import CONFIG_DIR, ConfigError, load_runtime, read_yaml, validate
from refinery.ray_runtime import attach_ray, init_ray, ray_address

DEFAULT_SERVE_CONFIG = str(CONFIG_DIR / "serve.yaml")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the Serve application (search, embed)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="deploy the applications of a Serve config file")
    up.add_argument("--config", default=DEFAULT_SERVE_CONFIG, help="Serve config YAML")
    up.add_argument("--profile", default=None, help="runtime profile: local | cluster | FILE")
    up.set_defaults(func=_up)
    for action, func, help_text in (
        ("down", _down, "delete every Refinery application and stop Serve"),
        ("status", _status, "print the status of the Serve applications as JSON"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument("--profile", default=None, help="runtime profile: local | cluster | FILE")
        sub.set_defaults(func=func)


def _applications(path: str) -> tuple[dict, list[dict]]:
    data = read_yaml(path)
    apps = data.get("applications")
    if not isinstance(apps, list) or not apps:
        raise ConfigError(f"{path}: applications: expected a non-empty list")
    return data.get("http_options") or {}, apps


def _up(args: argparse.Namespace) -> int:
    from ray import serve

    from serve.config import ServeAppConfig
    from serve.deploy import deploy_applications, wait_running

    http_options, apps = _applications(args.config)
    for app in apps:  # a mistake in args fails here, not later in a build task on the cluster
        validate(ServeAppConfig, dict(app.get("args") or {}), f"{args.config}: {app.get('name')}")
    runtime = load_runtime(args.profile)
    init_ray(runtime.ray)
    serve.start(http_options=http_options)
    deploy_applications(apps)
    failed = wait_running([app["name"] for app in apps])
    if failed:
        print(json.dumps(failed, indent=2), file=sys.stderr)
        return 1
    for app in apps:
        print(f"deployed {app['name']} at {app['route_prefix']}", flush=True)
    if ray_address(runtime.ray):
        return 0
    print("serving on a local Ray; Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()


def _down(args: argparse.Namespace) -> int:
    from ray import serve

    attach_ray(load_runtime(args.profile).ray)
    serve.shutdown()
    print("serve: shut down")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ray import serve

    attach_ray(load_runtime(args.profile).ray)
    status = serve.status()
    apps = {
        name: {
            "status": str(app.status),
            "deployments": {d: str(s.status) for d, s in app.deployments.items()},
        }
        for name, app in status.applications.items()
    }
    print(json.dumps(apps, indent=2))
    return 0
