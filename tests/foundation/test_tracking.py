"""MLflow tracking and the batch-job harness, against a real sqlite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jobs.batch import BatchJob, run_batch_job
from refinery.config import JobConfig, RuntimeConfig, TrackingConfig
from refinery.runstats import RunStats
from refinery.tracking import Tracker, flatten, tracked_run, tracking_uri


def client_for(runtime: RuntimeConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(runtime.tracking, runtime.storage))


def test_flatten_nested_params() -> None:
    flat = flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": {}})
    assert flat == {"a.b": "1", "a.c.d": "x", "e": "[1, 2]", "f": "{}"}


def test_env_overrides_default_store(
    runtime: RuntimeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tracking_uri(runtime.tracking, runtime.storage).startswith("sqlite:///")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri(runtime.tracking, runtime.storage) == "http://mlflow.internal:5000"
    explicit = TrackingConfig(uri="file:///tmp/x")
    assert tracking_uri(explicit, runtime.storage) == "file:///tmp/x"


def test_finished_run_has_params_metrics_artifacts(runtime: RuntimeConfig, tmp_path: Path) -> None:
    artifact = tmp_path / "table.csv"
    artifact.write_text("a,b\n1,2\n")
    with tracked_run("unit", runtime.tracking, runtime.storage, {"cfg": {"k": 3}}) as tracker:
        tracker.log_metrics({"rows": 10})
        tracker.log_artifact(artifact)
        run_id = tracker.run_id
    run = client_for(runtime).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["cfg.k"] == "3"
    assert run.data.metrics["rows"] == 10
    names = [f.path for f in client_for(runtime).list_artifacts(run_id)]
    assert "table.csv" in names


def test_failed_run_is_marked_failed_with_its_error(runtime: RuntimeConfig) -> None:
    tracker_seen: list[Tracker] = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracked_run("unit", runtime.tracking, runtime.storage) as tracker,
    ):
        tracker_seen.append(tracker)
        raise RuntimeError("boom")
    run = client_for(runtime).get_run(tracker_seen[0].run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: boom"


def test_runstats_metrics_are_flat_and_mlflow_safe() -> None:
    stats = RunStats("unit")
    with stats.timed("clean") as step:
        step.rows_in, step.rows_out = 10, 7
        step.dropped["too short"] += 3
    metrics = stats.metrics()
    assert metrics["clean.rows_in"] == 10
    assert metrics["clean.dropped.too short"] == 3
    assert stats.to_dict()["steps"]["clean"]["dropped"] == {"too short": 3}


# Runners for the harness tests: plain functions, as pipelines/ provides them.
def count_rows_runner(cfg: JobConfig, stats: RunStats, tracker: Tracker) -> None:
    import ray

    with stats.timed("count") as step:
        step.rows_in = ray.data.range(100).filter(lambda row: row["id"] % 3 != 0).count()
        step.rows_out = step.rows_in
        step.dropped["multiple of 3"] = 100 - step.rows_in


def failing_runner(cfg: JobConfig, stats: RunStats, tracker: Tracker) -> None:
    stats.step("read").rows_in = 5
    raise ValueError("input is not JSONL")


def _job(runner: str) -> BatchJob:
    return BatchJob("unit", "test job", "refinery.config:JobConfig", f"{__name__}:{runner}", "")


@pytest.mark.usefixtures("ray_session")
def test_harness_writes_stats_and_tracks_success(runtime: RuntimeConfig, tmp_path: Path) -> None:
    cfg = JobConfig(input="memory", output=str(tmp_path / "out"), runtime=runtime)
    stats = run_batch_job(_job("count_rows_runner"), cfg)
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert written["status"] == "FINISHED"
    assert written["steps"]["count"]["rows_in"] == 66
    assert written["mlflow_run_id"] == stats.run_id
    run = client_for(runtime).get_run(stats.run_id)
    assert run.data.metrics["count.dropped.multiple of 3"] == 34


@pytest.mark.usefixtures("ray_session")
def test_harness_records_a_failed_job(runtime: RuntimeConfig, tmp_path: Path) -> None:
    cfg = JobConfig(input="memory", output=str(tmp_path / "out"), runtime=runtime)
    with pytest.raises(ValueError, match="input is not JSONL"):
        run_batch_job(_job("failing_runner"), cfg)
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert written["status"] == "FAILED"
    assert written["steps"]["read"]["rows_in"] == 5
    run = client_for(runtime).get_run(written["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert "input is not JSONL" in run.data.tags["error"]
