"""`refinery run logs` end to end: real CLI, real MLflow store, shared local Ray."""

from __future__ import annotations

import gzip
import json
from collections import Counter
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


BASE = {
    "ts": "2024-01-01T12:00:00Z",
    "model": "gpt-4.1",
    "latency_ms": 423.5,
    "tokens_input": 100,
    "tokens_output": 7,
    "route": "chat",
    "status": "ok",
}
MAX_LINE = 1 << 14  # the job's line limit in the test: long lines need not be huge


def line(**changes) -> str:
    return json.dumps({**BASE, **changes}, ensure_ascii=False)


def with_value(key: str, literal: str) -> str:
    """A line whose `key` holds `literal` as written (NaN, 1e400, thousands of digits)."""
    return line(**{key: 0}).replace(f'"{key}": 0', f'"{key}": {literal}')


# Each bad kind twice over: on a line the compiled scan reads itself (a known field or a
# scalar extra) and on one it leaves to the validator (escapes or a nested extra).
BAD = [
    (with_value("latency_ms", "NaN"), "non_finite"),
    (with_value("latency_ms", "Infinity"), "non_finite"),
    (with_value("latency_ms", "1e400"), "non_finite"),
    (with_value("score", "1e400"), "non_finite"),
    (with_value("score", "-Infinity"), "non_finite"),
    (with_value("score", "1e400").replace("chat", "ch\\u0061t"), "non_finite"),
    (line(ts="0001-01-01T00:00:00+01:00"), "bad_timestamp"),
    (line(ts="9999-12-31T23:30:00-01:00"), "bad_timestamp"),  # the year 10000 in UTC
    (line(ts=-9e10), "bad_timestamp"),
    (line(ts="10000-01-01T00:00:00Z"), "bad_timestamp"),
    (with_value("tokens_input", "9" * 5000), "int_out_of_range"),
    (with_value("trace", "1" + "0" * 3000), "int_out_of_range"),
    (with_value("trace", "18446744073709551616"), "int_out_of_range"),  # 2**64
    (with_value("meta", "[" * 5000 + "]" * 5000), "too_deep"),
    (with_value("meta", "[" * 100 + "]" * 100), "too_deep"),
    (line(prompt="x" * MAX_LINE), "line_too_long"),
    ("not json at all", "invalid_json"),
    (line()[:50], "invalid_json"),
    (line(tokens_output="7"), "wrong_type"),
]
# Valid lines at the edges of what is kept: the chart and aggregates must take them.
EDGES = [
    line(ts="0001-01-01T00:00:00Z"),
    line(ts="9999-12-31T23:59:59.999999Z"),
    line(ts=None),
    line(latency_ms=1.5e300),
    line(request_id=18446744073709551615),  # uint64, valid JSON: kept
    line(meta=[[[1]]], route="r\\u0061g"),
]


def write_corpus(root: Path) -> tuple[list[tuple[str, int, str]], list[dict]]:
    """Logs with every kind of bad input under root/logs: a mixed file, a file that is not
    UTF-8, one that is gzip bytes, and a directory named like a log. Returns the expected
    quarantine (file, line, reason) and the records of the good lines."""
    logs = root / "logs"
    logs.mkdir()
    expected, good = [], []
    lines = []
    for n, (bad, _) in enumerate(BAD):
        lines += [line(tokens_output=n), bad]
        good.append({**BASE, "tokens_output": n})
    lines += EDGES
    good += [json.loads(text) for text in EDGES]
    mixed = logs / "mixed.jsonl"
    mixed.write_text("\n".join(lines) + "\n")
    expected += [(str(mixed), 2 * n + 2, reason) for n, (_, reason) in enumerate(BAD)]

    latin1 = logs / "latin1.jsonl"
    latin1.write_bytes(line(model="modèle").encode("latin-1") + b"\n" + line().encode() + b"\n")
    expected.append((str(latin1), 1, "invalid_utf8"))
    good.append(BASE)

    archive = logs / "archive.jsonl"  # rotated logs compressed in place: not text at all
    archive.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode() * 20, mtime=0))
    for n, raw in enumerate(archive.read_bytes().split(b"\n"), 1):
        if raw.removesuffix(b"\r"):
            expected.append((str(archive), n, None))  # not JSON, whatever it breaks first

    broken = logs / "broken.jsonl"  # listed by the glob, unreadable as a file
    broken.mkdir()
    expected.append((str(broken), 1, "unreadable"))
    return sorted(expected, key=lambda e: (e[0], e[1])), good


def test_bad_input_is_quarantined_and_the_job_finishes(
    ray_session, runtime: RuntimeConfig, tmp_path: Path
) -> None:
    expected, good = write_corpus(tmp_path)
    metrics = "{requests: count, tokens: sum(tokens_output), slowest: max(latency_ms)}"
    outputs = {}
    for engine in ("arrow", "ray"):
        out = tmp_path / engine
        code = run_logs(
            runtime,
            *("--input", str(tmp_path / "logs" / "*.jsonl"), "--output", str(out)),
            *("--set", f"engine={engine}", "--set", f"max_line_bytes={MAX_LINE}"),
            *("--set", "query.by=[model]", "--set", f"query.metrics={metrics}"),
        )
        assert code == 0
        quarantine = [json.loads(t) for t in (out / "quarantine.jsonl").read_text().splitlines()]
        got = sorted((q["file"], q["line"], q["reason"]) for q in quarantine)
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        # Gzip bytes break as invalid_utf8 or invalid_json, line by line: either will do.
        assert [(*g[:2], e[2] and g[2]) for g, e in zip(got, expected, strict=True)] == expected
        for q in quarantine:
            if q["reason"] not in ("unreadable", "line_too_long"):
                raw = Path(q["file"]).read_bytes().split(b"\n")[q["line"] - 1]
                assert q["raw"] == raw.decode("utf-8", errors="replace")
        too_long = next(q for q in quarantine if q["reason"] == "line_too_long")
        assert line(prompt="x" * MAX_LINE).startswith(too_long["raw"]) and too_long["raw"]

        stats = json.loads((out / "stats.json").read_text())
        assert stats["status"] == "FINISHED"
        counts = Counter(q["reason"] for q in quarantine)
        assert stats["logs"]["scan"]["quarantined"] == dict(sorted(counts.items()))
        assert stats["steps"]["parse"]["quarantined"] == counts
        assert stats["logs"]["scan"]["rows"] == len(good)

        table = pd.read_parquet(out / "aggregate.parquet")
        assert table["requests"].sum() == len(good)
        assert table["tokens"].sum() == sum(r["tokens_output"] for r in good)
        assert table["slowest"].max() == max(r["latency_ms"] for r in good)
        assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        outputs[engine] = (table, sorted(map(str, quarantine)))
    pd.testing.assert_frame_equal(outputs["arrow"][0], outputs["ray"][0])
    assert outputs["arrow"][1] == outputs["ray"][1]
