"""The quantile sketch keeps its relative error bound, and partials merge exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.logs import sketch
from pipelines.logs.aggregate import finalize, merge, partial
from pipelines.logs.prices import load_prices
from pipelines.logs.query import make_plan, parse_conditions

rng = np.random.default_rng(3)
DATASETS = {
    "lognormal": rng.lognormal(5, 1.5, 20_000),
    "tiny_and_huge": np.concatenate([rng.uniform(1e-6, 1e-3, 500), rng.uniform(1e6, 1e9, 500)]),
    "with_zeros_and_negatives": np.concatenate(
        [np.zeros(300), -rng.lognormal(2, 1, 300), rng.lognormal(2, 1, 400)]
    ),
    "integers_with_ties": rng.integers(1, 20, 5_000).astype(float),
    "one_value": np.array([42.0]),
}


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("q", [0.001, 0.5, 0.9, 0.95, 0.99])
def test_relative_error_bound(name: str, q: float) -> None:
    values = DATASETS[name]
    keys, counts = np.unique(sketch.keys(values), return_counts=True)
    got = sketch.grouped_quantiles(keys, counts, np.array([0]), q)[0]
    exact = np.quantile(values, q, method="inverted_cdf")
    assert abs(got - exact) <= sketch.ALPHA * abs(exact) + 1e-12


@pytest.mark.parametrize("by", [["model", "hour"], []])
def test_partials_merge_to_the_whole(by: list[str]) -> None:
    n = 5_000
    table = pa.table(
        {
            "ts": pa.array(np.arange(n) * 60_000_000, pa.timestamp("us", tz="UTC")),
            "model": pa.array(rng.choice(["a", "b", "c"], n)).dictionary_encode(),
            "route": pa.array(rng.choice(["x", "y"], n)).dictionary_encode(),
            "status": pa.array(rng.choice(["ok", "error"], n, p=[0.9, 0.1])).dictionary_encode(),
            "latency_ms": rng.lognormal(5, 1, n),
            "tokens_input": rng.integers(1, 1000, n),
            "tokens_output": rng.integers(1, 1000, n),
        }
    )
    metrics = {
        "n": "count",
        "avg": "avg(latency_ms)",
        "p95": "p95(latency_ms)",
        "cost": "cost",
        "max": "max(tokens_input)",
        "err": "error_rate",
        "tps": "tokens_per_s",
    }
    conditions = parse_conditions({"min_latency_ms": 50}, table.column_names)
    plan = make_plan(conditions, by, metrics, None)
    prices = load_prices()
    whole = finalize(partial(table, plan, prices), plan)
    parts = [partial(table.slice(start, 700), plan, prices) for start in range(0, n, 700)]
    merged = finalize(merge(parts, plan), plan)
    assert len(whole) == (3 * (n // 60 + 1) if by else 1)
    np.testing.assert_array_equal(whole["n"], merged["n"])
    np.testing.assert_array_equal(whole["p95"], merged["p95"])
    np.testing.assert_allclose(
        whole[["avg", "cost", "err", "tps"]], merged[["avg", "cost", "err", "tps"]], rtol=1e-12
    )
