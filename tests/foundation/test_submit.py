"""`refinery submit` and `refinery jobs` against a real Ray head started here (`ray start --head`
on loopback, token authentication on, as Ray 2.60 starts new clusters)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.logs.generate import write_logs
from refinery.ray_runtime import auth_token

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


GCS_PORT = free_port()


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head of its own (its GCS on GCS_PORT); yields its Jobs API address."""
    dashboard = free_port()
    command = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={GCS_PORT}",
        f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
        "--include-dashboard=true",
        # Ports of its own: the agents' defaults are taken by any other Ray on this machine
        # (the suite's shared one), and the Jobs API then has "No available agent".
        f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
    ]  # fmt: skip
    # Job drivers run `python` from the head's PATH: this environment's.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    log = (tmp_path_factory.mktemp("head") / "head.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for(f"{address}/api/version", process)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()
        _forget_address(GCS_PORT)


def _forget_address(port: int) -> None:
    """`ray start` records its cluster for later `ray.init()` calls to join; a stopped head's
    record would leave them waiting for it (`ray stop` removes it, but stops every Ray here)."""
    record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if record.is_file() and record.read_text().strip().endswith(f":{port}"):
        record.unlink()


def _wait_for(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "ray start --head exited"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # 401 without the token: up and answering
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer")


def refinery(*args: str, ray_address: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    if ray_address:
        # A driver joins a token-auth cluster in token mode, which Ray reads from the
        # environment at import (the Jobs API client sends the token itself).
        env.update(RAY_ADDRESS=ray_address, RAY_AUTH_MODE="token")
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def submit_logs(head: str, source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return refinery(
        "submit", "logs", "--address", head, "--profile", "local",
        "--set", f"input={source}", "--set", f"output={out}",
        "--set", f"runtime.storage.root={out.parent / 'state'}", *extra,
    )  # fmt: skip


@pytest.mark.slow
def test_submit_wait_status_logs_and_an_idempotent_retry(head: str, tmp_path: Path) -> None:
    write_logs(tmp_path / "logs", rows=3000, files=2, seed=5, malformed_rate=0.01)
    out = tmp_path / "out"
    done = submit_logs(head, tmp_path / "logs", out, "--submission-id", "nightly-1", "--wait")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("nightly-1: submitted")
    assert "nightly-1: SUCCEEDED" in done.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == "FINISHED" and stats["steps"]["parse"]["quarantined"]

    again = submit_logs(head, tmp_path / "logs", out, "--submission-id", "nightly-1")
    assert again.returncode == 0 and again.stdout.strip() == "nightly-1: already submitted"

    listed = refinery("jobs", "list", "--address", head).stdout.splitlines()
    assert [line.split()[:2] for line in listed if "nightly-1" in line] == [
        ["nightly-1", "SUCCEEDED"]
    ]
    status = json.loads(refinery("jobs", "status", "nightly-1", "--address", head).stdout)
    assert (status["status"], status["job"]) == ("SUCCEEDED", "logs")
    logs = refinery("jobs", "logs", "nightly-1", "--address", head).stdout
    assert '"status": "FINISHED"' in logs  # the job's own summary, printed by `refinery run`


@pytest.mark.slow
def test_wait_exits_with_the_jobs_failure(head: str, tmp_path: Path) -> None:
    failed = submit_logs(head, tmp_path / "missing", tmp_path / "out", "--wait")
    assert failed.returncode == 1
    assert "FAILED" in failed.stderr


@pytest.mark.slow
def test_stop_a_running_job(head: str, tmp_path: Path) -> None:
    write_logs(tmp_path / "logs", rows=1000, files=1, seed=6)
    submitted = submit_logs(head, tmp_path / "logs", tmp_path / "out", "--submission-id", "stop-me")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    stopped = refinery("jobs", "stop", "stop-me", "--address", head)
    assert stopped.stdout.strip() == "stop-me: stopping"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = json.loads(refinery("jobs", "status", "stop-me", "--address", head).stdout)
        if status["status"] in ("STOPPED", "SUCCEEDED", "FAILED"):
            break
        time.sleep(1)
    assert status["status"] == "STOPPED"


def test_an_unreachable_cluster_is_one_clear_error() -> None:
    result = refinery("jobs", "list", "--address", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert result.stderr.startswith("refinery: ") and "Traceback" not in result.stderr


def test_the_token_is_found_as_ray_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert auth_token() == "from-home"
    (tmp_path / "token").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_token() == "from-env"


@pytest.mark.slow
def test_a_local_run_starts_a_ray_of_its_own_beside_a_running_head(
    head: str, tmp_path: Path
) -> None:
    """The head is this machine's current cluster (`ray start` recorded it): a run with no
    address still starts its own Ray, with the profile's CPUs, instead of joining it."""
    write_logs(tmp_path / "logs", rows=500, files=1, seed=7)
    out = tmp_path / "out"
    result = refinery(
        "run", "logs", "--profile", "local", "--input", str(tmp_path / "logs"),
        "--output", str(out), "--set", "runtime.ray.num_cpus=1",
        "--set", f"runtime.storage.root={tmp_path / 'state'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Started a local Ray instance" in result.stderr
    assert json.loads((out / "stats.json").read_text())["cluster"]["cpus"] == 1


@pytest.mark.slow
def test_serve_status_and_down_attach_to_the_running_cluster(head: str) -> None:
    gcs = f"127.0.0.1:{GCS_PORT}"
    status = refinery("serve", "status", ray_address=gcs)
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout) == {}  # the head's applications: none
    down = refinery("serve", "down", ray_address=gcs)
    assert down.returncode == 0 and down.stdout.strip() == "serve: shut down"
    for result in (status, down):  # each joined the head; neither started a Ray of its own
        assert f"Using address {gcs}" in result.stderr and "Connected to Ray" in result.stderr
        assert "Started a local Ray instance" not in result.stderr
