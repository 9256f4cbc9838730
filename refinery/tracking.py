"""MLflow tracking shared by every job: params, metrics, artifacts, FAILED runs with their error.

A failing or unreachable MLflow never fails the job: the failure is recorded in the run's
stats.json instead (`Tracker.error`).

The default store is a sqlite file under the storage root, so a laptop needs no server;
MLFLOW_TRACKING_URI (or tracking.uri in the config) points every job at a team server.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from refinery.config import StorageConfig, TrackingConfig
from refinery.redact import redact, redact_text

log = logging.getLogger(__name__)

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
    """One MLflow run. Numbers go to metrics, the rest to params; files and dicts to artifacts.

    Tracking never fails the job it records: the first error from MLflow (server unreachable,
    store failing mid-run) is kept in `error`, later calls are skipped, and the job goes on.
    """

    def __init__(self, client: Any, run_id: str | None, error: str | None = None) -> None:
        self._client = client
        self.run_id = run_id
        self.error = error

    @property
    def ok(self) -> bool:
        return self.error is None

    def status(self) -> dict[str, Any]:
        """What stats.json says of tracking."""
        return {"ok": self.ok, "run_id": self.run_id, "error": self.error}

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        if not self.ok:
            return
        try:
            getattr(self._client, method)(self.run_id, *args, **kwargs)
        except Exception as error:  # any tracking failure leaves the job running
            self.error = redact_text(f"{what}: {type(error).__name__}: {error}")[:2000]
            log.warning("MLflow tracking failed, the job goes on without it: %s", self.error)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(redact(params)).items()]
        # log_batch takes at most 100 params per call.
        for start in range(0, len(items), 100):
            batch = items[start : start + 100]
            self._call("log params", "log_batch", params=batch)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            batch = items[start : start + 1000]
            self._call("log metrics", "log_batch", metrics=batch)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._call("log artifact", "log_artifact", str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self._call("log dict", "log_dict", dict(data), name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._call("set tag", "set_tag", key, value)

    def finish(self, error: BaseException | None) -> None:
        """FINISHED, or FAILED with the job's error (secrets taken out) and its traceback."""
        if error is not None:
            self.set_tags({"error": redact_text(f"{type(error).__name__}: {error}")[:5000]})
            trace = redact_text("".join(traceback.format_exception(error)))
            self._call("log error", "log_text", trace, "error.txt")
        status = "FINISHED" if error is None else "FAILED"
        self._call("end run", "set_terminated", status=status)


def start_run(name: str, tracking: TrackingConfig, storage: StorageConfig) -> Tracker:
    """A run left open for the caller to finish: for what outlives one call (a rollout)."""
    try:
        client = mlflow_client(tracking, storage)
        experiment = client.get_experiment_by_name(tracking.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(tracking.experiment)
        )
        run = client.create_run(experiment_id, run_name=name, tags={"refinery.job": name})
    except Exception as error:  # the job runs untracked rather than not at all
        message = redact_text(f"start run: {type(error).__name__}: {error}")[:2000]
        log.warning("MLflow tracking unavailable, the job runs without it: %s", message)
        return Tracker(None, None, error=message)
    return Tracker(client, run.info.run_id)


def mlflow_client(tracking: TrackingConfig, storage: StorageConfig) -> Any:
    from mlflow.tracking import MlflowClient

    # MLflow's own defaults retry an unreachable server for minutes; a job should not wait that.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(tracking.max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(tracking.request_timeout_s))
    return MlflowClient(tracking_uri=tracking_uri(tracking, storage))


@contextmanager
def tracked_run(
    name: str,
    tracking: TrackingConfig,
    storage: StorageConfig,
    params: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run; an exception inside marks it FAILED with the error, then propagates.

    Params are logged with their secrets redacted (refinery/redact.py). If MLflow itself fails,
    the body still runs and `tracker.error` says what failed."""
    tracker = start_run(name, tracking, storage)
    try:
        if params:
            tracker.log_params(params)
        yield tracker
    except BaseException as error:
        tracker.finish(error)
        raise
    tracker.finish(None)
