"""`refinery run reindex`: the reindex build (pipelines/documents/reindex), and, with
`reindex.rollout: true`, the new version handed to the Serve application's canary rollout
(serve/canary/controller.py), whose promotion makes it the registry's `champion`.

The build lives in pipelines/ (it never imports serve/); the hand-over to Serve lives here.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field

from pipelines.documents.reindex.config import ReindexConfig, ReindexJobConfigBase
from pipelines.documents.reindex.job import CHAMPION, Outcome, build
from refinery.runstats import RunStats
from refinery.tracking import Tracker, tracking_uri
from serve.canary.rollout import APP_NAME, RolloutConfig


class ReindexJobSection(ReindexConfig):
    rollout: bool = Field(
        False, description="hand a version that passed validation to the app's canary rollout"
    )
    app: str = Field("refinery", pattern=APP_NAME.pattern, description="the Serve application")
    canary: RolloutConfig = Field(
        default_factory=RolloutConfig, description="the rollout's steps, interval and gates"
    )
    canary_state: str | None = Field(
        None, description="where the canary controller keeps rollouts; null: STORAGE_ROOT/canary"
    )


class ReindexJobConfig(ReindexJobConfigBase):
    reindex: ReindexJobSection = Field(default_factory=ReindexJobSection)


def run(cfg: ReindexJobConfig, stats: RunStats, tracker: Tracker) -> None:
    outcome = build(cfg, stats, tracker)
    if cfg.reindex.rollout:
        with stats.timed("rollout"):
            outcome.report["rollout"] = hand_to_rollout(cfg, outcome)
    tracker.log_dict(outcome.report, "reindex.json")


def hand_to_rollout(cfg: ReindexJobConfig, outcome: Outcome) -> dict[str, Any]:
    """Start the canary rollout of the new version; the controller runs it after the job."""
    import ray

    from serve.canary.controller import start_controller

    rc, runtime = cfg.reindex, cfg.runtime
    state_root = rc.canary_state or os.path.abspath(f"{runtime.storage.root}/canary")
    controller = start_controller(
        rc.app, state_root, tracking_uri(runtime.tracking, runtime.storage)
    )
    registry = {
        "uri": outcome.registry.uri,
        "name": outcome.registry.name,
        "version": outcome.registry_version,
        "previous": outcome.champion.registry_version if outcome.champion else None,
    }
    status = ray.get(
        controller.rollout.remote(
            outcome.version, outcome.snapshot, rc.canary.model_dump(mode="json"), registry
        )
    )
    rollout = status["rollout"]
    return {
        "app": rc.app,
        "to": outcome.version,
        "from": rollout["from_version"],
        "status": rollout["status"],
        "weight": rollout["weight"],
        "on_promotion": f"{registry['name']} version {registry['version']} becomes {CHAMPION}",
    }
