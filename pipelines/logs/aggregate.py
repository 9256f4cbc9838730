"""Filter, partial aggregates, merge, final metrics: the one query path of both engines.

A partial is small (one row per group): sums, non-null counts, min and max per column, and
for each percentile column a sketch (count per log bucket per group). Partials of blocks
merge by sum/min/max, so the Arrow engine makes one partial of the whole table and the Ray
engine one per block inside its tasks, then both call finalize().
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.logs import sketch
from pipelines.logs.prices import PriceTable
from pipelines.logs.query import Condition, Plan
from pipelines.logs.schema import BUCKET_KEY, TIME_KEYS, TS

ROWS = "count_all"
SKETCH_KEY = "__bucket"
NULL_BUCKET = np.iinfo(np.int32).max  # null values: keeps every group in every sketch
# Derived per-row columns: the derived metrics are ratios of their sums.
ERR, TPS_TOKENS, TPS_MS, COST = "__err", "__tps_tokens", "__tps_ms", "__cost"


@dataclass
class Partial:
    stats: pa.Table  # keys + count_all + "<func>:<column>" for func in sum, count, min, max
    sketches: dict[str, pa.Table]  # column -> keys + __bucket + count


def filter_mask(table: pa.Table, conditions: tuple[Condition, ...]) -> pa.ChunkedArray | None:
    """AND of the conditions; rows where a condition is null (missing value) do not match."""
    mask = None
    for cond in conditions:
        column = table[cond.column]
        if pa.types.is_null(column.type):  # a column this block never saw: no row matches
            hit = pa.nulls(table.num_rows, pa.bool_())
        elif cond.op == "in":
            hit = _is_in(column, cond.values)
        else:
            compare = {"min": pc.greater_equal, "max": pc.less_equal, "until": pc.less}[cond.op]
            hit = compare(column, pa.scalar(cond.values[0], _plain(column.type)))
        mask = hit if mask is None else pc.and_kleene(mask, hit)
    return None if mask is None else pc.fill_null(mask, False)


def _plain(type_: pa.DataType) -> pa.DataType:
    return type_.value_type if pa.types.is_dictionary(type_) else type_


def _is_in(column: pa.ChunkedArray, values: tuple) -> pa.ChunkedArray:
    value_set = pa.array(values, _plain(column.type))
    if not pa.types.is_dictionary(column.type):
        return pc.is_in(column, value_set=value_set)
    # Match the few dictionary entries, then look the answer up per row by index.
    chunks = [
        pc.take(pc.is_in(chunk.dictionary, value_set=value_set), chunk.indices)
        for chunk in column.chunks
    ]
    return pa.chunked_array(chunks, pa.bool_())


def partial(table: pa.Table, plan: Plan, prices: PriceTable) -> Partial:
    """Filter `table` and aggregate it per group into a Partial."""
    table = table.select([c for c in table.column_names if c in plan.columns])
    mask = filter_mask(table, plan.conditions)
    if mask is not None:
        table = table.filter(mask)
    work = _with_keys(table, plan)
    work, aggs = _with_stat_inputs(work, plan, prices)
    keys = list(plan.keys)
    stats = work.group_by(keys, use_threads=False).aggregate(aggs + [([], "count_all")])
    stats = _rename(stats, aggs, keys)
    sketches = {}
    for column in {m.column for m in plan.metrics if m.kind == "quantile"}:
        values = work[column].to_numpy(zero_copy_only=False).astype(np.float64)
        bucket = np.full(len(values), NULL_BUCKET, np.int32)
        valid = ~np.isnan(values)
        bucket[valid] = sketch.keys(values[valid])
        sk = work.select(keys).append_column(SKETCH_KEY, pa.array(bucket))
        sk = sk.group_by(keys + [SKETCH_KEY], use_threads=False).aggregate([([], "count_all")])
        sketches[column] = _decode(sk.rename_columns(keys + [SKETCH_KEY, "count"]), keys)
    return Partial(stats, sketches)


def _with_keys(table: pa.Table, plan: Plan) -> pa.Table:
    """Add the time keys (minute/hour/day/bucket) as columns named like the key."""
    for key in plan.keys:
        if key in TIME_KEYS or key == BUCKET_KEY:
            multiple, unit = TIME_KEYS.get(key, plan.bucket)
            floored = pc.floor_temporal(table[TS], multiple=multiple, unit=unit)
            table = table.append_column(key, floored)
    return table


def _with_stat_inputs(
    table: pa.Table, plan: Plan, prices: PriceTable
) -> tuple[pa.Table, list[tuple[str, str]]]:
    """The (column, function) pairs to aggregate, adding derived columns as needed."""
    aggs: list[tuple[str, str]] = []

    def need(column: str, *funcs: str) -> None:
        aggs.extend((column, f) for f in funcs if (column, f) not in aggs)

    for m in plan.metrics:
        if m.kind in ("sum", "avg"):
            need(m.column, "sum", "count")
        elif m.kind in ("min", "max"):
            need(m.column, m.kind)
        elif m.kind == "count_of":
            need(m.column, "count")
        elif m.kind == "error_rate":
            need(ERR, "sum", "count")
        elif m.kind == "tokens_per_s":
            need(TPS_TOKENS, "sum")
            need(TPS_MS, "sum")
        elif m.kind == "cost":
            need(COST, "sum", "count")
    derived = {column for column, _ in aggs if column.startswith("__")}
    if ERR in derived:
        status = pc.cast(table["status"], pa.string())
        table = table.append_column(ERR, pc.cast(pc.not_equal(status, "ok"), pa.int64()))
    if TPS_TOKENS in derived:
        tokens, ms = table["tokens_output"], table["latency_ms"]
        both = pc.and_(pc.is_valid(tokens), pc.is_valid(ms))
        table = table.append_column(TPS_TOKENS, pc.if_else(both, tokens, None))
        table = table.append_column(TPS_MS, pc.if_else(both, ms, None))
    if COST in derived:
        table = table.append_column(COST, _row_cost(table, prices))
    return table, aggs


def _row_cost(table: pa.Table, prices: PriceTable) -> pa.ChunkedArray:
    """tokens_input * input price + tokens_output * output price, by the row's model; null
    where the model has no price."""
    model = pc.cast(table["model"], pa.string()).combine_chunks().dictionary_encode()
    found = [prices.lookup(name) for name in model.dictionary.to_pylist()]
    scale = 1.0 / prices.per_tokens
    price_in = pa.array([p.input * scale if p else None for p in found], pa.float64())
    price_out = pa.array([p.output * scale if p else None for p in found], pa.float64())
    tokens_in = pc.cast(table["tokens_input"], pa.float64())
    tokens_out = pc.cast(table["tokens_output"], pa.float64())
    cost_in = pc.multiply(tokens_in, pc.take(price_in, model.indices))
    cost_out = pc.multiply(tokens_out, pc.take(price_out, model.indices))
    return pc.add(cost_in, cost_out)


def _rename(stats: pa.Table, aggs: list[tuple[str, str]], keys: list[str]) -> pa.Table:
    columns = {f"{func}:{column}": stats[f"{column}_{func}"] for column, func in aggs}
    columns[ROWS] = stats[ROWS]
    table = pa.table({**{k: stats[k] for k in keys}, **columns})
    return _decode(table, keys)


def _decode(table: pa.Table, keys: list[str]) -> pa.Table:
    """Dictionary keys -> plain strings: partials of different blocks must concatenate."""
    for i, f in enumerate(table.schema):
        if f.name in keys and pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, pc.cast(table.column(i), f.type.value_type))
    return table


def merge(partials: list[Partial], plan: Plan) -> Partial:
    keys = list(plan.keys)
    stats = pa.concat_tables([p.stats for p in partials], promote_options="permissive")
    funcs = []
    for name in stats.column_names:
        if name in keys:
            continue
        func = "sum" if name == ROWS else name.split(":", 1)[0]
        funcs.append((name, "sum" if func == "count" else func))
    merged = stats.group_by(keys, use_threads=False).aggregate(funcs)
    merged = pa.table({**{k: merged[k] for k in keys}, **{n: merged[f"{n}_{f}"] for n, f in funcs}})
    sketches = {}
    for column in partials[0].sketches:
        parts = pa.concat_tables(
            [p.sketches[column] for p in partials], promote_options="permissive"
        )
        summed = parts.group_by(keys + [SKETCH_KEY], use_threads=False).aggregate(
            [("count", "sum")]
        )
        sketches[column] = summed.rename_columns(
            [n if n != "count_sum" else "count" for n in summed.column_names]
        )
    return Partial(merged, sketches)


def finalize(part: Partial, plan: Plan) -> pd.DataFrame:
    """Partial -> the answer: key columns then metrics in the order asked, sorted by keys."""
    keys = list(plan.keys)
    order = [(k, "ascending", "at_end") for k in keys]
    stats = part.stats.sort_by(order) if keys else part.stats
    columns: dict[str, pa.Array | np.ndarray] = {k: stats[k] for k in keys}
    for m in plan.metrics:
        if m.kind == "quantile":
            sk = part.sketches[m.column]
            sk = sk.sort_by(order + [(SKETCH_KEY, "ascending", "at_end")])
            columns[m.name] = _quantiles(sk, keys, m.q, stats.num_rows)
        else:
            columns[m.name] = _metric(stats, m)
    frame = pa.table(columns).to_pandas()
    return frame.reset_index(drop=True)


def _metric(stats: pa.Table, m) -> pa.ChunkedArray:
    def col(name: str) -> pa.ChunkedArray:
        return stats[name]

    def ratio(num: pa.ChunkedArray, den: pa.ChunkedArray) -> pa.ChunkedArray:
        den = pc.cast(den, pa.float64())
        return pc.divide(pc.cast(num, pa.float64()), pc.if_else(pc.equal(den, 0), None, den))

    if m.kind == "count":
        return col(ROWS)
    if m.kind == "count_of":
        return col(f"count:{m.column}")
    if m.kind in ("min", "max"):
        return col(f"{m.kind}:{m.column}")
    if m.kind == "sum":
        return pc.if_else(pc.equal(col(f"count:{m.column}"), 0), None, col(f"sum:{m.column}"))
    if m.kind == "avg":
        return ratio(col(f"sum:{m.column}"), col(f"count:{m.column}"))
    if m.kind == "error_rate":
        return ratio(col(f"sum:{ERR}"), col(f"count:{ERR}"))
    if m.kind == "tokens_per_s":
        return pc.multiply(ratio(col(f"sum:{TPS_TOKENS}"), col(f"sum:{TPS_MS}")), 1000.0)
    if m.kind == "cost":
        return pc.if_else(pc.equal(col(f"count:{COST}"), 0), None, col(f"sum:{COST}"))
    raise AssertionError(m.kind)


def _quantiles(sk: pa.Table, keys: list[str], q: float, groups: int) -> np.ndarray:
    """Per group (in key order, like the sorted stats) the q-quantile of its sketch."""
    if sk.num_rows == 0:  # a global aggregate over no rows
        return np.full(groups, np.nan)
    bucket = sk[SKETCH_KEY].to_numpy()
    counts = np.where(bucket == NULL_BUCKET, 0, sk["count"].to_numpy())
    starts = _group_starts(sk, keys)
    assert len(starts) == groups, "every group appears in every sketch"
    return sketch.grouped_quantiles(bucket, counts, starts, q)


def _group_starts(table: pa.Table, keys: list[str]) -> np.ndarray:
    """First row of each run of equal keys (nulls equal to each other) in a sorted table."""
    n = table.num_rows
    if n == 0:
        return np.zeros(0, np.int64)
    change = np.zeros(n, bool)
    change[0] = True
    for key in keys:
        column = table[key]
        head, tail = column.slice(0, n - 1), column.slice(1)
        differs = pc.fill_null(pc.not_equal(head, tail), False)
        null_flip = pc.xor(pc.is_null(head), pc.is_null(tail))
        change[1:] |= pc.or_(differs, null_flip).to_numpy(zero_copy_only=False)
    return np.flatnonzero(change)
