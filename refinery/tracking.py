"""MLflow tracking shared by every job: params, metrics, artifacts, FAILED runs with their error.

The default store is a sqlite file under the storage root, so a laptop needs no server;
MLFLOW_TRACKING_URI (or tracking.uri in the config) points every job at a team server.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from refinery.config import StorageConfig, TrackingConfig

# MLflow limits one param value to 6000 characters.
_MAX_PARAM_CHARS = 6000


def tracking_uri(tracking: TrackingConfig, storage: StorageConfig) -> str:
    if tracking.uri:
        return tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(storage.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'a.b.c': 'value'}, as MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:_MAX_PARAM_CHARS]
    return flat


class Tracker:
    """One MLflow run. Numbers go to metrics, the rest to params; files and dicts to artifacts."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        # log_batch takes at most 100 params per call.
        for start in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self._client.log_dict(self.run_id, dict(data), name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, value)


@contextmanager
def tracked_run(
    name: str,
    tracking: TrackingConfig,
    storage: StorageConfig,
    params: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run; an exception inside marks it FAILED with the error, then propagates."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(tracking, storage))
    experiment = client.get_experiment_by_name(tracking.experiment)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(tracking.experiment)
    )
    run = client.create_run(experiment_id, run_name=name, tags={"refinery.job": name})
    tracker = Tracker(client, run.info.run_id)
    try:
        if params:
            tracker.log_params(params)
        yield tracker
    except BaseException as error:
        tracker.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        client.log_text(run.info.run_id, traceback.format_exc(), "error.txt")
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
