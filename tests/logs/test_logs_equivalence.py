"""Both engines against DuckDB on the same generated logs (with malformed lines): exact for
count/sum/min/max, float-exact for averages, within the sketch error for percentiles."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.logs import LogStore, arrow_engine
from pipelines.logs.prices import load_prices
from pipelines.logs.sketch import ALPHA

duckdb = pytest.importorskip("duckdb")

COLUMNS = (
    "{'ts': 'TIMESTAMPTZ', 'model': 'VARCHAR', 'latency_ms': 'DOUBLE', "
    "'tokens_input': 'BIGINT', 'tokens_output': 'BIGINT', 'route': 'VARCHAR', "
    "'status': 'VARCHAR'}"
)

# (filter, by, metrics, bucket, DuckDB select list, DuckDB where, DuckDB group keys)
QUERIES = [
    pytest.param(
        {"model": "gpt-4.1", "min_latency_ms": 300},
        ["route"],
        {
            "count": "count",
            "avg_latency": "avg(latency_ms)",
            "p95": "p95(latency_ms)",
            "max_latency": "max(latency_ms)",
            "tokens": "sum(tokens_output)",
            "err": "error_rate",
        },
        None,
        "count(*), avg(latency_ms), quantile_disc(latency_ms, 0.95), max(latency_ms), "
        "sum(tokens_output), avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END)",
        "model = 'gpt-4.1' AND latency_ms >= 300",
        "route",
        id="seed",
    ),
    pytest.param(
        {
            "route": ["chat", "rag"],
            "since": "2024-01-01T03:00:00Z",
            "until": "2024-01-01T20:00:00Z",
        },
        ["model", "hour"],
        {
            "n": "count",
            "tin": "sum(tokens_input)",
            "lo": "min(latency_ms)",
            "hi": "max(tokens_output)",
            "p50": "p50(latency_ms)",
            "p99": "p99(latency_ms)",
        },
        None,
        "count(*), sum(tokens_input), min(latency_ms), max(tokens_output), "
        "quantile_disc(latency_ms, 0.5), quantile_disc(latency_ms, 0.99)",
        "route IN ('chat', 'rag') AND ts >= '2024-01-01T03:00:00Z' AND ts < '2024-01-01T20:00:00Z'",
        "model, date_trunc('hour', ts)",
        id="model-hour",
    ),
    pytest.param(
        {"max_tokens_input": 2000},
        ["status"],
        {"n": "count", "avg_out": "avg(tokens_output)", "tps": "tokens_per_s", "cost": "cost"},
        "6h",
        "count(*), avg(tokens_output), sum(tokens_output) / sum(latency_ms) * 1000, "
        "sum(tokens_input * p.input / 1e6 + tokens_output * p.output / 1e6)",
        "tokens_input <= 2000",
        "status, time_bucket(INTERVAL 6 HOUR, ts)",
        id="status-bucket-cost",
    ),
    pytest.param(
        {},
        [],
        {"n": "count", "p90": "p90(latency_ms)", "avg": "avg(latency_ms)"},
        None,
        "count(*), quantile_disc(latency_ms, 0.9), avg(latency_ms)",
        "true",
        "",
        id="global",
    ),
]


@pytest.fixture(scope="module")
def reference(log_dir: Path):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = sorted(str(p) for p in log_dir.glob("*.jsonl"))
    # DuckDB turns malformed lines into rows of NULLs; generated lines that are
    # kept always carry a latency, so this is the set of rows our parser keeps.
    con.execute(
        f"CREATE TABLE logs AS SELECT * FROM read_json({files}, columns={COLUMNS}, "
        "format='newline_delimited', ignore_errors=true) WHERE latency_ms IS NOT NULL"
    )
    prices = load_prices()
    con.execute("CREATE TABLE prices (model VARCHAR, input DOUBLE, output DOUBLE)")
    con.executemany(
        "INSERT INTO prices VALUES (?, ?, ?)",
        [(m, p.input, p.output) for m, p in prices.models.items()],
    )
    return con


def duck(con, select: str, where: str, keys: str) -> pd.DataFrame:
    group = f"GROUP BY {keys} ORDER BY {keys} NULLS LAST" if keys else ""
    head = f"{keys}, " if keys else ""
    sql = f"SELECT {head}{select} FROM logs LEFT JOIN prices p USING (model) WHERE {where} {group}"
    return con.execute(sql).df()


def assert_same(ours: pd.DataFrame, ref: pd.DataFrame, metrics: dict[str, str], nkeys: int) -> None:
    assert len(ours) == len(ref) > 0
    for i in range(nkeys):
        left, right = ours.iloc[:, i], ref.iloc[:, i]
        if pd.api.types.is_datetime64_any_dtype(left):
            left, right = left.dt.tz_convert("UTC"), pd.to_datetime(right, utc=True)
        assert left.tolist() == right.tolist()
    for j, (name, spec) in enumerate(metrics.items()):
        got = ours[name].to_numpy(dtype=float)
        want = ref.iloc[:, nkeys + j].to_numpy(dtype=float)
        if spec.startswith("p"):
            assert np.all(np.abs(got - want) <= ALPHA * np.abs(want) + 1e-9), name
        elif spec.startswith(("count", "sum(", "min(", "max(")):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=name)


@pytest.fixture(scope="module")
def arrow_store(log_dir: Path) -> LogStore:
    return LogStore.from_jsonl(log_dir, engine="arrow")


@pytest.mark.parametrize(("conds", "by", "metrics", "bucket", "select", "where", "keys"), QUERIES)
def test_arrow_engine_matches_duckdb(
    arrow_store, reference, conds, by, metrics, bucket, select, where, keys
) -> None:
    ours = arrow_store.query().filter(**conds).aggregate(by=by, metrics=metrics, bucket=bucket)
    nkeys = len(by) + (1 if bucket else 0)
    assert_same(ours, duck(reference, select, where, keys), metrics, nkeys)


def test_arrow_engine_in_pieces_matches_duckdb(log_dir: Path, reference, monkeypatch) -> None:
    # A large table is kept in pieces (small chunks joined), one partial per piece, merged.
    monkeypatch.setattr(arrow_engine, "PIECE_ROWS", 4000)
    monkeypatch.setattr(arrow_engine, "PIECES_PER_CPU", 1000)
    store = LogStore.from_jsonl(log_dir, engine="arrow", chunk_bytes=300_000)
    pieces = store.backend.table.to_batches()
    assert len(pieces) >= 5 and all(p.num_rows >= 4000 for p in pieces[:-1])
    for param in QUERIES:
        conds, by, metrics, bucket, select, where, keys = param.values
        ours = store.query().filter(**conds).aggregate(by=by, metrics=metrics, bucket=bucket)
        nkeys = len(by) + (1 if bucket else 0)
        assert_same(ours, duck(reference, select, where, keys), metrics, nkeys)


def test_queries_from_many_threads_share_one_bounded_pool(log_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(arrow_engine, "PIECE_ROWS", 4000)
    monkeypatch.setattr(arrow_engine, "PIECES_PER_CPU", 1000)
    store = LogStore.from_jsonl(log_dir, engine="arrow", chunk_bytes=300_000)

    def answer(param) -> pd.DataFrame:
        conds, by, metrics, bucket = param.values[:4]
        return store.query().filter(**conds).aggregate(by=by, metrics=metrics, bucket=bucket)

    alone = [answer(param) for param in QUERIES]
    with ThreadPoolExecutor(4) as callers:
        together = list(callers.map(answer, QUERIES * 3))
    for ours, expected in zip(together, alone * 3, strict=True):
        pd.testing.assert_frame_equal(ours, expected)
    # The pieces ran on the process's query threads, not on threads started per query.
    pool = [t for t in threading.enumerate() if t.name.startswith("logs-query")]
    assert 0 < len(pool) <= (os.cpu_count() or 1)


# Run in an interpreter of its own: forking the test process would fork Ray's threads too.
_FORKED_QUERY = """
import multiprocessing, sys
from pipelines.logs import LogStore, arrow_engine

arrow_engine.PIECE_ROWS, arrow_engine.PIECES_PER_CPU = 4000, 1000
store = LogStore.from_jsonl(sys.argv[1], engine="arrow", chunk_bytes=300_000)

def count_by_model(_):
    return store.query().aggregate(by=["model"], metrics={"n": "count"}).to_dict("list")

parent = count_by_model(None)  # the parent's pool now has threads
with multiprocessing.get_context("fork").Pool(1) as child:
    assert child.apply_async(count_by_model, (None,)).get(timeout=60) == parent
print("child answered", sum(parent["n"]))
"""


def test_a_forked_child_queries_on_a_pool_of_its_own(log_dir: Path) -> None:
    # The child has none of the parent's pool threads: its query must not wait on them.
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_QUERY, str(log_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("child answered")


def test_a_table_is_kept_in_at_most_a_few_pieces_per_cpu(monkeypatch) -> None:
    monkeypatch.setattr(arrow_engine.os, "cpu_count", lambda: 4)
    assert arrow_engine.piece_rows(50_000) == arrow_engine.PIECE_ROWS
    assert arrow_engine.piece_rows(8_000_001) == 1_000_001  # 8 pieces, the last one short


def test_pieces_join_small_chunks_and_keep_large_ones() -> None:
    chunks = [
        pa.table({"model": pa.array(names).dictionary_encode(), "n": list(range(len(names)))})
        for names in (["a"] * 5, ["b", "a"], ["c"] * 3, ["a", "d"] * 4, ["e"])
    ]
    table = arrow_engine.in_pieces(pa.concat_tables(chunks), 4)
    pieces = table.to_batches()
    assert [p.num_rows for p in pieces] == [5, 5, 8, 1]
    assert table.to_pylist() == pa.concat_tables(chunks).to_pylist()
    # A chunk large enough on its own is not copied; joined ones share one dictionary.
    assert pieces[0].column(1).buffers()[1].address == chunks[0]["n"].chunk(0).buffers()[1].address
    assert pieces[1].column(0).dictionary.to_pylist() == ["b", "a", "c"]


def test_ray_engine_matches_duckdb(ray_session, log_dir: Path, reference, arrow_store) -> None:
    store = LogStore.from_jsonl(log_dir, engine="ray", chunk_bytes=1 << 20)
    assert store.engine == "ray" and len(store.backend.chunks) > len(store.files)
    for param in QUERIES:
        conds, by, metrics, bucket, select, where, keys = param.values
        ours = store.query().filter(**conds).aggregate(by=by, metrics=metrics, bucket=bucket)
        nkeys = len(by) + (1 if bucket else 0)
        assert_same(ours, duck(reference, select, where, keys), metrics, nkeys)
    # Same parse outcome as the in-process engine, line numbers included.
    assert store.scan.to_dict() == arrow_store.scan.to_dict()
    assert store.quarantine == arrow_store.quarantine
    with pytest.raises(ValueError, match="unknown column 'nope'"):
        store.query().filter(nope=1).aggregate()
