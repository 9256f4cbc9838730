"""Changing a running application's canary (its snapshot, version, weight) live: through the
ingress's user_config, redeployed declaratively as `serve deploy` does.

Serve applies a declarative config whose code and args are unchanged as a user_config update:
each replica's reconfigure() runs, no replica restarts and no request in flight fails. (An
application deployed with `serve.run()` from Python would restart its replicas on any change,
so the canary needs it deployed from a config: `serve deploy`, `serve run CONFIG` or
`refinery serve up`.)
"""

from __future__ import annotations

from typing import Any

from serve.config import CanaryConfig, IngressUserConfig, ServeAppConfig
from serve.deploy import deploy_applications

INGRESS = "Ingress"


class NotDeclarative(RuntimeError):
    """The application was not deployed from a config, so its user_config cannot change live."""


def current_routing(app: str) -> IngressUserConfig:
    """The ingress's user_config as the application runs it now."""
    return IngressUserConfig.model_validate(_ingress_user_config(_details(), app))


def deployed_llms(app: str) -> list[str]:
    """The model_ids of the application's LLM deployments (`llm`, then `llm_arms`)."""
    detail = _details().get("applications", {}).get(app) or {}
    args = (detail.get("deployed_app_config") or {}).get("args") or {}
    return [llm.model_id for llm in ServeAppConfig.model_validate(args).llms]


def set_canary(app: str, canary: CanaryConfig | None, stable: dict[str, Any] | None = None) -> None:
    """Serve `canary` (None: no canary) beside the stable arm; `stable` replaces fields of the
    stable arm (`version`, `index`) too, as promoting or rolling back does."""
    details = _details()
    current = IngressUserConfig.model_validate(_ingress_user_config(details, app))
    routing = IngressUserConfig.model_validate(
        {**current.model_dump(), **(stable or {}), "canary": canary and canary.model_dump()}
    )
    config = details["applications"][app]["deployed_app_config"]
    others = [d for d in config.get("deployments", []) if d["name"] != INGRESS]
    ingress = {**_override(config, INGRESS), "user_config": routing.model_dump(mode="json")}
    deploy_applications([{**config, "deployments": [*others, ingress]}], keep_others=True)


def _details() -> dict[str, Any]:
    from ray.serve.context import _get_global_client

    return _get_global_client().get_serve_details()


def _ingress_user_config(details: dict[str, Any], app: str) -> dict[str, Any]:
    detail = details.get("applications", {}).get(app)
    if detail is None:
        raise KeyError(f"no Serve application named {app!r} is running")
    if not detail.get("deployed_app_config"):
        raise NotDeclarative(
            f"application {app!r} was deployed with serve.run(), not from a config: deploy it "
            "with `refinery serve up`, `serve deploy` or `serve run CONFIG` to change its "
            "canary live"
        )
    override = _override(detail["deployed_app_config"], INGRESS)
    if "user_config" in override:
        return override["user_config"]
    return detail["deployments"][INGRESS]["deployment_config"]["user_config"]


def _override(app_config: dict[str, Any], deployment: str) -> dict[str, Any]:
    for override in app_config.get("deployments", []):
        if override["name"] == deployment:
            return override
    return {"name": deployment}
