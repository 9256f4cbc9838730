"""Loading some columns (LogStore.from_jsonl(columns=...)): the columns built are exactly
those asked for, extras typed only when one is asked for, every line validated as in a full
load (a line broken in a column not loaded is quarantined all the same), and the answers of
the queries those columns serve equal the full load's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.logs import LogStore, UnknownColumnError, query_columns
from pipelines.logs.generate import VARIANTS, write_logs
from pipelines.logs.parse import parse_buffer

SEED_FILTERS = [{"model": "gpt-4.1", "min_latency_ms": 200.0}]
SEED_METRICS = {
    "count": "count",
    "avg_latency": "avg(latency_ms)",
    "p95_latency": "p95(latency_ms)",
    "tokens_out": "sum(tokens_output)",
    "error_rate": "error_rate",
}


def seed(store: LogStore, by: list[str] | None = None) -> pd.DataFrame:
    query = store.query()
    for conds in SEED_FILTERS:
        query = query.filter(**conds)
    return query.aggregate(by=by or ["route"], metrics=SEED_METRICS)


def test_query_columns_names_what_the_query_reads() -> None:
    assert query_columns(SEED_FILTERS, ["route"], SEED_METRICS) == {
        "model",
        "latency_ms",
        "route",
        "tokens_output",
        "status",
    }
    assert query_columns([{"since": "2024-01-01"}], ["region"], {"c": "cost"}) == {
        "ts",
        "region",
        "model",
        "tokens_input",
        "tokens_output",
    }
    assert query_columns((), ["hour"], None) == {"ts"}


@pytest.mark.parametrize("variant", ["mixed", "bad1", "nested"])
def test_a_load_of_the_query_columns_answers_and_quarantines_as_a_full_one(
    tmp_path: Path, variant: str
) -> None:
    [path] = write_logs(tmp_path, 6000, seed=4, noise=VARIANTS[variant])
    full = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=100_000)
    columns = query_columns(SEED_FILTERS, ["route"], SEED_METRICS)
    some = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=100_000, columns=columns)
    assert set(some.schema.names) == columns
    assert [q.to_dict() for q in some.quarantine] == [q.to_dict() for q in full.quarantine]
    assert some.scan == full.scan
    pd.testing.assert_frame_equal(seed(some), seed(full))
    with pytest.raises(UnknownColumnError):
        seed(some, by=["region"])
    # An extra field asked for is typed as a full load types it.
    with_region = LogStore.from_jsonl(path, engine="arrow", columns=columns | {"region"})
    assert with_region.schema.field("region").type == full.schema.field("region").type
    pd.testing.assert_frame_equal(seed(with_region, ["region"]), seed(full, ["region"]))


def test_broken_parts_in_columns_not_loaded_are_quarantined() -> None:
    good = '{"ts": "2024-01-01T00:00:00Z", "model": "m", "latency_ms": 5, "region": "eu"}'
    lines = [
        good,
        good.replace('"2024-01-01T00:00:00Z"', '"yesterday"'),  # bad ts, not loaded
        good.replace('"eu"}', '"eu"'),  # extras cut short
        good.replace('"region": "eu"', '"meta": {"a": [1, }'),  # broken nested extra
        good.replace('"latency_ms": 5', '"latency_ms": 5, "tokens_input": "x"'),
    ]
    data = "".join(line + "\n" for line in lines).encode()
    full = parse_buffer(data, "f.jsonl")
    some = parse_buffer(data, "f.jsonl", columns=["latency_ms"])
    assert [(q.line, q.reason) for q in some.quarantined] == [
        (q.line, q.reason) for q in full.quarantined
    ]
    assert [q.line for q in some.quarantined] == [2, 3, 4, 5]
    assert some.table.column_names == ["latency_ms"]
    assert some.table.num_rows == full.table.num_rows == 1


def test_no_known_column_asked_keeps_one_for_the_rows(tmp_path: Path) -> None:
    [path] = write_logs(tmp_path, 500, seed=1, noise=VARIANTS["clean"])
    store = LogStore.from_jsonl(path, engine="arrow", chunk_bytes=20_000, columns=[])
    assert store.schema.names == ["model"]
    count = store.query().aggregate(metrics={"n": "count"})
    assert count["n"].tolist() == [500]


def test_ray_engine_loads_the_columns_asked_for(ray_session, tmp_path: Path) -> None:
    [path] = write_logs(tmp_path, 3000, seed=2, noise=VARIANTS["mixed"])
    columns = query_columns(SEED_FILTERS, ["route"], SEED_METRICS)
    full = LogStore.from_jsonl(path, engine="arrow")
    ray = LogStore.from_jsonl(path, engine="ray", chunk_bytes=100_000, columns=columns)
    pd.testing.assert_frame_equal(seed(ray), seed(full))
    assert set(ray.schema.names) == columns
    assert ray.quarantine == full.quarantine
    with pytest.raises(UnknownColumnError):
        seed(ray, by=["region"])
