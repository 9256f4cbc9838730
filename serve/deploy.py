"""Deploying applications from their config, as `serve deploy` does (declaratively): Serve then
applies a later change of a deployment's user_config to the running replicas, without a
restart. Shared by `refinery serve up`, the canary and the tests."""

from __future__ import annotations

import time
from typing import Any


def deploy_applications(apps: list[dict[str, Any]], keep_others: bool = False) -> None:
    """Deploy `apps` (entries of a Serve config's `applications`). A declarative deploy
    replaces every declaratively deployed application: `keep_others` sends the ones not in
    `apps` back unchanged instead of deleting them."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    client = _get_global_client()
    names = {app["name"] for app in apps}
    others = []
    if keep_others:
        running = client.get_serve_details().get("applications", {}).values()
        others = [
            detail["deployed_app_config"]
            for detail in running
            if detail.get("deployed_app_config")
            and detail["deployed_app_config"]["name"] not in names
        ]
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": [*others, *apps]}))


def wait_running(names: list[str], timeout_s: float = 600) -> dict[str, str]:
    """{} once every named application runs; else each failed one's message."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications
        failed = {
            name: status[name].message
            for name in names
            if name in status and status[name].status == ApplicationStatus.DEPLOY_FAILED
        }
        if failed:
            return failed
        running = [
            n for n in names if n in status and status[n].status == ApplicationStatus.RUNNING
        ]
        if len(running) == len(names):
            return {}
        time.sleep(0.5)
    return {name: f"not running after {timeout_s:.0f} s" for name in names}
