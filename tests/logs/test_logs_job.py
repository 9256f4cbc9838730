"""`refinery run logs` end to end: real CLI, real MLflow store, shared local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from jobs.cli import main
from pipelines.logs import LogStore
from refinery.config import CONFIG_DIR, RuntimeConfig
from refinery.tracking import tracking_uri


def run_logs(runtime: RuntimeConfig, *args: str) -> int:
    return main(
        [
            "run",
            "logs",
            "--config",
            str(CONFIG_DIR / "logs.yaml"),
            "--set",
            f"runtime.storage.root={runtime.storage.root}",
            "--set",
            f"runtime.tracking.experiment={runtime.tracking.experiment}",
            *args,
        ]
    )


def test_run_logs_writes_table_quarantine_chart_stats(
    ray_session, runtime: RuntimeConfig, log_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert run_logs(runtime, "--input", str(log_dir), "--output", str(out)) == 0
    printed = json.loads(capsys.readouterr().out)
    stats = json.loads((out / "stats.json").read_text())
    assert printed["mlflow_run_id"] == stats["mlflow_run_id"] and stats["status"] == "FINISHED"

    store = LogStore.from_jsonl(log_dir, engine="arrow")
    table = pd.read_parquet(out / "aggregate.parquet")
    assert list(table.columns[:3]) == ["model", "route", "requests"]
    assert table["requests"].sum() == store.scan.rows
    assert table[["model", "route"]].apply(tuple, axis=1).is_monotonic_increasing

    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantine) == sum(store.scan.quarantined.values()) > 0
    assert {"file", "line", "reason", "detail", "raw"} <= set(quarantine[0])
    first = quarantine[0]
    assert Path(first["file"]).read_text().splitlines()[first["line"] - 1] == first["raw"]

    parse = stats["steps"]["parse"]
    assert parse["rows_out"] == store.scan.rows
    assert parse["quarantined"] == dict(store.scan.quarantined)
    assert stats["logs"]["outputs"]["chart"].endswith("latency.png")
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(runtime.tracking, runtime.storage))
    run = client.get_run(stats["mlflow_run_id"])
    assert run.data.metrics["logs.rows"] == store.scan.rows
    assert (
        run.data.metrics["parse.quarantined.invalid_json"] == store.scan.quarantined["invalid_json"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "logs")}
    assert {"logs/aggregate.parquet", "logs/quarantine.jsonl", "logs/latency.png"} <= artifacts


def test_run_logs_csv_ray_engine_and_filters(
    ray_session, runtime: RuntimeConfig, log_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "csv"
    code = run_logs(
        runtime,
        "--input",
        str(log_dir / "logs-00001.jsonl"),
        "--output",
        str(out),
        "--set",
        "engine=ray",
        "--set",
        "table.format=csv",
        "--set",
        "chart.enabled=false",
        "--set",
        "query.filters={model: gpt-4.1}",
        "--set",
        "query.by=[route]",
        "--set",
        "query.bucket=6h",
    )
    assert code == 0
    table = pd.read_csv(out / "aggregate.csv")
    assert list(table.columns[:3]) == ["route", "bucket", "requests"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["logs"]["engine"] == "ray" and "chart" not in stats["logs"]["outputs"]
    expected = LogStore.from_jsonl(log_dir / "logs-00001.jsonl", engine="arrow").query()
    assert table["requests"].sum() == expected.filter(model="gpt-4.1").aggregate()["count"][0]


def test_config_mistakes_are_reported(runtime: RuntimeConfig, tmp_path: Path, capsys) -> None:
    assert (
        run_logs(runtime, "--set", "query.metric={x: count}", "--input", "x", "--output", "y") == 2
    )
    assert "query.metric: unknown key" in capsys.readouterr().err
