"""Filters, metrics, buckets and errors on small logs, against values computed by hand."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.logs import LogStore, QueryError, UnknownColumnError
from pipelines.logs.prices import ModelPrice, PriceTable

RECORDS = [
    # ts, model, route, status, latency_ms, tokens_input, tokens_output, extra fields
    ("2024-01-01T10:05:00Z", "a", "chat", "ok", 100, 10, 50, {"region": "eu", "score": 1.5}),
    ("2024-01-01T10:35:00Z", "a", "rag", "error", 300.5, 20, 30, {"region": "us"}),
    ("2024-01-01T11:10:00Z", "a", "chat", "ok", 200, 30, 10, {"region": "eu", "score": 3}),
    ("2024-01-01T11:50:00Z", "b", "chat", "timeout", 1000, 40, None, {}),
    ("2024-01-01T12:00:00+01:00", "b", "rag", "ok", None, 50, 70, {"region": "eu"}),
    ("2024-01-01T13:00:00Z", None, "chat", "ok", 50, 60, 80, {}),
    ("2024-01-01T13:30:00Z", "c", "chat", None, 700, 1, 2, {"score": 0.5}),
]
PRICES = PriceTable(
    models={"a": ModelPrice(input=1.0, output=2.0)},
    default=ModelPrice(input=10.0, output=20.0),
    per_tokens=1000,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LogStore:
    path = tmp_path_factory.mktemp("small") / "small.jsonl"
    lines = []
    for ts, model, route, status, latency, t_in, t_out, extra in RECORDS:
        record = {
            "ts": ts,
            "model": model,
            "route": route,
            "status": status,
            "latency_ms": latency,
            "tokens_input": t_in,
            "tokens_output": t_out,
            **extra,
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return LogStore.from_jsonl(path, engine="arrow", prices=PRICES)


def rows(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def test_seed_example(store: LogStore) -> None:
    df = (
        store.query()
        .filter(min_latency_ms=200)
        .aggregate(
            by=["model"],
            metrics={
                "count": "count",
                "avg_latency": "avg(latency_ms)",
                "max_latency": "max(latency_ms)",
            },
        )
    )
    assert list(df.columns) == ["model", "count", "avg_latency", "max_latency"]
    assert rows(df) == [
        {"model": "a", "count": 2, "avg_latency": 250.25, "max_latency": 300.5},
        {"model": "b", "count": 1, "avg_latency": 1000.0, "max_latency": 1000.0},
        {"model": "c", "count": 1, "avg_latency": 700.0, "max_latency": 700.0},
    ]


@pytest.mark.parametrize(
    ("conds", "expected"),
    [
        ({"model": "a"}, 3),
        ({"model": ["a", "c"]}, 4),
        ({"route": ["rag"], "model": "b"}, 1),
        ({"min_latency_ms": 200, "max_latency_ms": 700}, 3),  # bounds inclusive, nulls excluded
        ({"max_tokens_output": 30}, 3),
        ({"since": "2024-01-01T11:00:00Z"}, 5),  # 12:00+01:00 is 11:00Z: since is inclusive
        ({"until": datetime(2024, 1, 1, 11, 0, tzinfo=UTC)}, 2),  # until is exclusive
        ({"since": 1704106800, "until": "2024-01-01T13:00:00Z"}, 3),  # epoch seconds = 11:00Z
        ({"region": "eu"}, 3),  # an extra field
        ({"min_score": 1}, 2),
        ({"status": "missing-value"}, 0),
    ],
)
def test_filters(store: LogStore, conds: dict, expected: int) -> None:
    df = store.query().filter(**conds).aggregate(metrics={"n": "count"})
    assert df["n"].tolist() == [expected]


def test_filters_chain_and(store: LogStore) -> None:
    base = store.query().filter(route="chat")
    assert base.filter(model="a").aggregate(metrics={"n": "count"})["n"][0] == 2
    assert base.aggregate(metrics={"n": "count"})["n"][0] == 5


def test_every_metric(store: LogStore) -> None:
    metrics = {
        "n": "count",
        "n_lat": "count(latency_ms)",
        "sum_out": "sum(tokens_output)",
        "avg": "avg(latency_ms)",
        "min": "min(latency_ms)",
        "max": "max(latency_ms)",
        "p50": "p50(latency_ms)",
        "p99": "p99(latency_ms)",
        "err": "error_rate",
        "tps": "tokens_per_s",
        "cost": "cost",
    }
    df = store.query().filter(model=["a", "b"]).aggregate(by=["model"], metrics=metrics)
    assert list(df.columns) == ["model", *metrics]
    a, b = rows(df)
    lat_a = [100, 300.5, 200]
    assert (a["n"], a["n_lat"], a["sum_out"]) == (3, 3, 90)
    assert a["avg"] == pytest.approx(np.mean(lat_a)) and (a["min"], a["max"]) == (100, 300.5)
    assert a["p50"] == pytest.approx(200, rel=0.01) and a["p99"] == pytest.approx(300.5, rel=0.01)
    assert a["err"] == pytest.approx(1 / 3)
    assert a["tps"] == pytest.approx(90 / sum(lat_a) * 1000)
    assert a["cost"] == pytest.approx((60 * 1.0 + 90 * 2.0) / 1000)
    # b: one row without latency, one without tokens_output; unlisted model: default price.
    assert (b["n"], b["n_lat"], b["sum_out"], b["avg"]) == (2, 1, 70, 1000.0)
    assert b["err"] == pytest.approx(0.5)
    assert b["tps"] is None  # no row has both tokens_output and latency
    assert b["cost"] == pytest.approx((50 * 10 + 70 * 20) / 1000)  # row with null output: no cost


def test_group_keys_sorted_nulls_last_and_extras(store: LogStore) -> None:
    df = store.query().aggregate(by=["model", "region"], metrics={"n": "count"})
    keys = [(r["model"], r["region"]) for r in rows(df)]
    assert keys == [("a", "eu"), ("a", "us"), ("b", "eu"), ("b", None), ("c", None), (None, None)]
    assert df["n"].tolist() == [2, 1, 1, 1, 1, 1]
    score = store.query().aggregate(by=["region"], metrics={"s": "sum(score)"})
    assert rows(score) == [
        {"region": "eu", "s": 4.5},
        {"region": "us", "s": None},
        {"region": None, "s": 0.5},
    ]


def test_time_buckets(store: LogStore) -> None:
    hourly = store.query().aggregate(by=["model", "hour"], metrics={"n": "count"})
    assert str(hourly["hour"].dtype) == "datetime64[us, UTC]"
    got = [(r["model"], r["hour"].hour, r["n"]) for r in rows(hourly)]
    assert got == [("a", 10, 2), ("a", 11, 1), ("b", 11, 2), ("c", 13, 1), (None, 13, 1)]
    buckets = store.query().aggregate(metrics={"n": "count"}, bucket="2h")
    assert list(buckets.columns) == ["bucket", "n"]
    assert [(r["bucket"].hour, r["n"]) for r in rows(buckets)] == [(10, 5), (12, 2)]
    first = store.query().aggregate(by=["bucket", "route"], metrics={"n": "count"}, bucket="30m")
    assert list(first.columns) == ["bucket", "route", "n"]
    assert first["bucket"].is_monotonic_increasing and len(first) == 7


def test_empty_results(store: LogStore) -> None:
    grouped = store.query().filter(model="zzz").aggregate(by=["route"], metrics={"n": "count"})
    assert list(grouped.columns) == ["route", "n"] and len(grouped) == 0
    total = (
        store.query().filter(model="zzz").aggregate(metrics={"n": "count", "p": "p95(latency_ms)"})
    )
    assert total["n"].tolist() == [0] and math.isnan(total["p"][0])


def test_errors_name_the_problem(store: LogStore) -> None:
    with pytest.raises(UnknownColumnError, match=r"'modle'.*known columns: .*latency_ms.*model"):
        store.query().filter(modle="a").aggregate()
    with pytest.raises(UnknownColumnError, match="'latency'"):
        store.query().filter(min_latency=3).aggregate()
    with pytest.raises(UnknownColumnError, match="'user'"):
        store.query().aggregate(by=["user"])
    with pytest.raises(UnknownColumnError, match="'lat'"):
        store.query().aggregate(metrics={"x": "p95(lat)"})
    with pytest.raises(QueryError, match="forms: count"):
        store.query().aggregate(metrics={"x": "median(latency_ms)"})
    with pytest.raises(QueryError, match="not a number"):
        store.query().aggregate(metrics={"x": "avg(model)"})
    with pytest.raises(QueryError, match="expected a number"):
        store.query().filter(min_latency_ms="100").aggregate()
    with pytest.raises(QueryError, match="bucket"):
        store.query().aggregate(bucket="1 fortnight")
    with pytest.raises(QueryError, match="cannot parse"):
        store.query().filter(since="soon").aggregate()
    with pytest.raises(ValueError, match="engine"):
        LogStore.from_jsonl(Path(__file__), engine="spark")


def test_prices_load_from_configs() -> None:
    from pipelines.logs.prices import load_prices

    prices = load_prices()
    assert prices.lookup("gpt-4.1").output > prices.lookup("gpt-4.1").input > 0
    assert prices.lookup("not-a-model") is None


def test_auto_engine_choice() -> None:
    from pipelines.logs.sources import LogFile
    from pipelines.logs.store import RAY_MIN_BYTES, RAY_MIN_FILES, choose_engine

    small = [LogFile(f"f{i}", f"f{i}", 1000) for i in range(3)]
    many = [LogFile(f"f{i}", f"f{i}", 1000) for i in range(RAY_MIN_FILES)]
    assert choose_engine(small) == "arrow"
    assert choose_engine(many) == "ray"
    assert choose_engine([LogFile("big", "big", RAY_MIN_BYTES)]) == "ray"


def test_many_high_cardinality_keys_match_pandas() -> None:
    """Six integer keys of 5,000 values each: the combined code would overflow int64 without
    compaction between keys."""
    from pipelines.logs.aggregate import finalize, partial
    from pipelines.logs.query import make_plan

    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(6)]
    columns = {k: pa.array(rng.integers(0, 5000, 5000)) for k in keys}
    table = pa.table({**columns, "latency_ms": rng.random(5000)})
    plan = make_plan([], keys, {"n": "count", "s": "sum(latency_ms)"}, None)
    got = finalize(partial(table, plan, PRICES), plan)
    ref = table.to_pandas().groupby(keys).agg(n=("latency_ms", "size"), s=("latency_ms", "sum"))
    ref = ref.reset_index()
    np.testing.assert_array_equal(got[keys].to_numpy(), ref[keys].to_numpy())
    np.testing.assert_array_equal(got["n"], ref["n"])
    np.testing.assert_allclose(got["s"], ref["s"])
