"""MLflow tracking and the batch-job harness, against a real sqlite MLflow store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jobs.batch import BatchJob, run_batch_job
from refinery.config import JobConfig, RuntimeConfig, TrackingConfig
from refinery.redact import REDACTED
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


def test_params_are_logged_with_secrets_redacted(runtime: RuntimeConfig) -> None:
    params = {
        "runtime": {
            "ray": {"runtime_env": {"env_vars": {"AWS_SECRET_ACCESS_KEY": "abc123", "N": "1"}}},
        },
        "input": "s3://AKIAXXX:s3cr3t@bucket/corpus/",
        "serve": {"api_keys": ["key-1"], "max_tokens": 64},
        "source": "https://host/data.jsonl?X-Amz-Signature=deadbeef&part=1",
    }
    with tracked_run("unit", runtime.tracking, runtime.storage, params) as tracker:
        run_id = tracker.run_id
    logged = client_for(runtime).get_run(run_id).data.params
    assert logged["runtime.ray.runtime_env.env_vars.AWS_SECRET_ACCESS_KEY"] == REDACTED
    assert logged["runtime.ray.runtime_env.env_vars.N"] == REDACTED
    assert logged["input"] == f"s3://{REDACTED}@bucket/corpus/"
    assert logged["serve.api_keys"] == REDACTED
    assert logged["serve.max_tokens"] == "64"
    assert logged["source"] == f"https://host/data.jsonl?X-Amz-Signature={REDACTED}&part=1"
    assert not any("s3cr3t" in v or "abc123" in v or "key-1" in v for v in logged.values())


def test_a_failed_runs_error_is_logged_without_credentials(runtime: RuntimeConfig) -> None:
    with (
        pytest.raises(OSError),
        tracked_run("unit", runtime.tracking, runtime.storage) as tracker,
    ):
        raise OSError("cannot open s3://user:hunter2@bucket/x")
    run = client_for(runtime).get_run(tracker.run_id)
    assert run.data.tags["error"] == f"OSError: cannot open s3://{REDACTED}@bucket/x"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.usefixtures("ray_session")
def test_an_unreachable_mlflow_does_not_fail_the_job(
    runtime: RuntimeConfig, tmp_path: Path
) -> None:
    unreachable = TrackingConfig(uri=f"http://127.0.0.1:{_closed_port()}", max_retries=0)
    cfg = JobConfig(
        input="memory",
        output=str(tmp_path / "out"),
        runtime=runtime.model_copy(update={"tracking": unreachable}),
    )
    stats = run_batch_job(_job("count_rows_runner"), cfg)
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats.status == written["status"] == "FINISHED"
    assert written["steps"]["count"]["rows_in"] == 66
    assert written["tracking"]["ok"] is False
    assert written["tracking"]["error"].startswith("start run: ")
    assert written["mlflow_run_id"] is None


class MlflowServer:
    """A real `mlflow server` on loopback, in its own process."""

    def __init__(self, root: Path) -> None:
        self.port = _closed_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root", str(root / "artifacts"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        self.kill()
        raise RuntimeError("mlflow server did not start")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


SERVER: list[MlflowServer] = []


def kill_tracking_server_then_count_runner(
    cfg: JobConfig, stats: RunStats, tracker: Tracker
) -> None:
    assert tracker.ok and tracker.run_id  # the run was created while the server was up
    SERVER[0].kill()
    count_rows_runner(cfg, stats, tracker)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_mlflow_failing_mid_run_does_not_fail_the_job(
    runtime: RuntimeConfig, tmp_path: Path
) -> None:
    SERVER[:] = [MlflowServer(tmp_path / "mlflow")]
    try:
        tracking = TrackingConfig(uri=SERVER[0].uri, max_retries=0)
        cfg = JobConfig(
            input="memory",
            output=str(tmp_path / "out"),
            runtime=runtime.model_copy(update={"tracking": tracking}),
        )
        stats = run_batch_job(_job("kill_tracking_server_then_count_runner"), cfg)
    finally:
        if SERVER[0].process.poll() is None:
            SERVER[0].kill()
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats.status == written["status"] == "FINISHED"
    assert written["steps"]["count"]["rows_in"] == 66
    assert written["mlflow_run_id"] == stats.run_id is not None
    assert written["tracking"]["ok"] is False
    assert written["tracking"]["error"].startswith("log metrics: ")
