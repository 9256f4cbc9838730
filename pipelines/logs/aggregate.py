"""Filter, partial aggregates, merge, final metrics: the one query path of both engines.

Each condition narrows the selected rows (codes tested against a per-code wanted table);
rows get a dense group id (the dictionary codes of the keys, combined); then one compiled
pass per column (kernels.py) keeps every statistic of every group: for the low-cardinality
keys of LLM logs this is several times faster than a hash aggregation. A partial holds per
group: row count, sums, non-null counts, min and max per column, and a sketch per percentile
column. Partials merge by the same kernels (group ids of the concatenated keys), so the Arrow
engine makes one partial of its table and the Ray engine one per block inside its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from operator import attrgetter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.logs import sketch
from pipelines.logs.kernels import dense_ids, group_stats, select
from pipelines.logs.prices import PriceTable
from pipelines.logs.query import Condition, Metric, Plan
from pipelines.logs.schema import TIME_KEYS, TS

ROWS = "count_all"
# Derived per-row columns: the derived metrics are ratios of their sums.
ERR, TPS_TOKENS, TPS_MS, COST = "__err", "__tps_tokens", "__tps_ms", "__cost"
_REDUCE = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}


@dataclass
class Partial:
    keys: pa.Table  # one row per group: the key values (dictionaries decoded)
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # "<func>:<column>" per group
    # column -> int64 array [n, 3] of (group, sketch bucket, count)
    sketches: dict[str, np.ndarray] = field(default_factory=dict)
    integer: set[str] = field(default_factory=set)  # columns whose sum/min/max are integers


def partial(table: pa.Table, plan: Plan, prices: PriceTable) -> Partial:
    """Filter `table` and aggregate it per group of plan.keys."""
    rows = _matching_rows(table, plan.conditions)
    ids, keys = _row_groups(table, rows, plan)
    groups = keys.num_rows if plan.keys else 1
    out = Partial(keys, {ROWS: np.bincount(ids, minlength=groups)})
    needs = _stat_inputs(plan)
    quantiles = [m.column for m in plan.metrics if m.kind == "quantile"]
    for column in dict.fromkeys([*needs, *quantiles]):
        values, lut, integer = _column(table, column, prices)
        stats = group_stats(ids, values, groups, rows, lut, with_sketch=column in quantiles)
        if integer:
            out.integer.add(column)
        for func in needs.get(column, ()):
            out.stats[f"{func}:{column}"] = _STAT_OF[func](stats)
        if stats.sketch is not None:
            out.sketches[column] = stats.sketch
    return out


def _matching_rows(table: pa.Table, conditions: tuple[Condition, ...]) -> np.ndarray | None:
    """Positions of the rows matching every condition (None: all rows), each condition
    testing only the rows the ones before it kept."""
    rows = None
    for cond in conditions:
        codes, wanted = _condition(table[cond.column], cond)
        rows = select(codes, wanted, rows)
    return rows


_MASK = np.array([False, True])  # a boolean mask as codes: 1 is wanted


def _condition(column: pa.ChunkedArray, cond: Condition) -> tuple[np.ndarray, np.ndarray]:
    """(codes per row, wanted per code): a row matches where wanted[code]; a null (missing)
    value never matches."""
    if pa.types.is_null(column.type):  # a column this block never saw
        return np.zeros(len(column), np.uint8), np.zeros(1, bool)
    if cond.op == "in" and pa.types.is_dictionary(column.type):
        codes, labels = _dictionary_codes(column)
        value_set = pa.array(cond.values, column.type.value_type)
        wanted = pc.fill_null(pc.is_in(labels, value_set=value_set), False)
        return codes, wanted.to_numpy(zero_copy_only=False)
    if cond.op == "in":
        hit = pc.is_in(column, value_set=pa.array(cond.values, column.type))
        hit = pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
        return hit.view(np.uint8), _MASK
    # NumPy on the (zero-copy) values: nulls are NaN / NaT there, and compare false.
    values = column.to_numpy(zero_copy_only=False)
    bound = cond.values[0]
    if values.dtype.kind == "M":  # datetime64 holds UTC without a zone
        bound = np.datetime64(bound.astimezone(UTC).replace(tzinfo=None), "us")
    if cond.op == "min":
        hit = values >= bound
    else:
        hit = values <= bound if cond.op == "max" else values < bound
    return hit.view(np.uint8), _MASK


def _dictionary_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Per-row codes into `labels`, the dictionary plus a trailing null for null rows."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_null(array.type):  # a column this block never saw: all null strings
        return np.zeros(len(array), np.int32), pa.nulls(1, pa.string())
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    size = len(array.dictionary)
    indices = array.indices if array.null_count == 0 else pc.fill_null(array.indices, size)
    labels = pa.concat_arrays([array.dictionary, pa.nulls(1, array.dictionary.type)])
    return indices.to_numpy(zero_copy_only=False), labels


def _row_groups(
    table: pa.Table, rows: np.ndarray | None, plan: Plan
) -> tuple[np.ndarray, pa.Table]:
    """Dense group id per selected row, and the key values of each group."""
    n = table.num_rows if rows is None else len(rows)
    if not plan.keys:  # a global aggregate has its one group even over no rows
        return np.zeros(n, np.int64), pa.table({})
    code = np.zeros(n, np.int64)
    radix, parts = 1, []
    for key in plan.keys:
        codes, labels = _key_codes(table, key, rows, plan)
        if radix * len(labels) >= 1 << 62:  # keep the combined code inside int64
            code, example = _compact(code, radix)
            radix = len(example)
        code = code * len(labels) + codes
        radix *= len(labels)
        parts.append((key, codes, labels))
    ids, example = _compact(code, radix)  # any row of each group carries its key values
    columns = {key: labels.take(pa.array(codes[example])) for key, codes, labels in parts}
    return ids, pa.table(columns)


def _key_codes(
    table: pa.Table, key: str, rows: np.ndarray | None, plan: Plan
) -> tuple[np.ndarray, pa.Array]:
    # minute/hour/day/bucket are computed from ts, unless the table has them (merged partials)
    if key not in table.column_names:
        ts = table[TS] if rows is None else table[TS].take(rows)
        multiple, unit = TIME_KEYS.get(key, plan.bucket)
        return _dictionary_codes(pc.floor_temporal(ts, multiple=multiple, unit=unit))
    column = table[key]
    if pa.types.is_dictionary(column.type):
        codes, labels = _dictionary_codes(column)
        return (codes if rows is None else codes[rows]), labels.cast(column.type.value_type)
    return _dictionary_codes(column if rows is None else column.take(rows))


def _compact(code: np.ndarray, radix: int) -> tuple[np.ndarray, np.ndarray]:
    """Combined key codes -> ids 0..G-1 (in code order), and a row of each group."""
    if radix <= max(4 * len(code), 1 << 16):
        return dense_ids(code, radix)
    _, example, ids = np.unique(code, return_index=True, return_inverse=True)
    return ids.astype(np.int64), example


def _stat_inputs(plan: Plan) -> dict[str, list[str]]:
    """Column (data or derived) -> the reductions the metrics need of it."""
    needs: dict[str, list[str]] = {}

    def need(column: str, *funcs: str) -> None:
        needs.setdefault(column, [])
        needs[column] += [f for f in funcs if f not in needs[column]]

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
    return needs


def _column(
    table: pa.Table, column: str, prices: PriceTable
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """A column's value per table row (null: NaN), as (values, None, is integer), or as
    (codes, value per code, False) for the derived columns that depend on a string."""
    if column == ERR:
        codes, labels = _dictionary_codes(table["status"])
        per_label = np.where(pc.equal(labels, "ok").to_numpy(zero_copy_only=False), 0.0, 1.0)
        per_label[-1] = np.nan  # no status: neither ok nor an error
        return codes, per_label, False
    if column in (TPS_TOKENS, TPS_MS):
        # Only rows with both: tokens per second of the requests whose time is known.
        tokens = _floats(table, "tokens_output")
        latency = _floats(table, "latency_ms")
        values = tokens if column == TPS_TOKENS else latency
        return np.where(np.isnan(tokens) | np.isnan(latency), np.nan, values), None, False
    if column == COST:
        return _row_cost(table, prices), None, False
    return _data(table[column]), None, pa.types.is_integer(table[column].type)


def _data(column: pa.ChunkedArray) -> np.ndarray:
    """Numbers as NumPy: zero-copy without nulls; with nulls, floats with NaN."""
    if pa.types.is_null(column.type):  # a column this block never saw
        return np.full(len(column), np.nan)
    return column.to_numpy(zero_copy_only=False)


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return _data(table[column]).astype(np.float64, copy=False)


def _row_cost(table: pa.Table, prices: PriceTable) -> np.ndarray:
    """tokens_input x input price + tokens_output x output price by the row's model; NaN
    where the model has no price or a token count is missing."""
    codes, labels = _dictionary_codes(table["model"])
    found = [prices.lookup(name) for name in labels.to_pylist()]
    scale = 1.0 / prices.per_tokens
    price_in = np.array([p.input * scale if p else np.nan for p in found])
    price_out = np.array([p.output * scale if p else np.nan for p in found])
    tokens_in = _floats(table, "tokens_input")
    tokens_out = _floats(table, "tokens_output")
    return tokens_in * price_in[codes] + tokens_out * price_out[codes]


_STAT_OF = {
    "sum": attrgetter("sums"),
    "count": attrgetter("counts"),
    "min": attrgetter("mins"),
    "max": attrgetter("maxs"),
}


def merge(partials: list[Partial], plan: Plan) -> Partial:
    """One partial from many: group ids of the concatenated keys, then the same reductions."""
    keys = pa.concat_tables([p.keys for p in partials], promote_options="permissive")
    offsets = np.cumsum([0] + [len(p.stats[ROWS]) for p in partials])
    if plan.keys:
        ids, merged_keys = _row_groups(keys, None, plan)
    else:  # one group per partial, all the same
        ids, merged_keys = np.zeros(len(partials), np.int64), keys
    groups = merged_keys.num_rows if plan.keys else 1
    out = Partial(merged_keys, integer=set().union(*(p.integer for p in partials)))
    for name in partials[0].stats:
        values = np.concatenate([p.stats[name] for p in partials]).astype(np.float64)
        func = _REDUCE[name.split(":", 1)[0]] if name != ROWS else "sum"
        out.stats[name] = _STAT_OF[func](group_stats(ids, values, groups))
    for column in partials[0].sketches:
        rows = [p.sketches[column] for p in partials]
        group = np.concatenate([ids[o + r[:, 0]] for o, r in zip(offsets[:-1], rows, strict=True)])
        bucket = np.concatenate([r[:, 1] for r in rows])
        counts = np.concatenate([r[:, 2] for r in rows])
        out.sketches[column] = _merge_sketch(group, bucket, counts)
    return out


def _merge_sketch(group: np.ndarray, bucket: np.ndarray, counts: np.ndarray) -> np.ndarray:
    if not len(group):
        return np.zeros((0, 3), np.int64)
    low = int(bucket.min())
    width = int(bucket.max()) - low + 1
    present, inverse = np.unique(group * width + (bucket - low), return_inverse=True)
    summed = np.bincount(inverse, weights=counts).astype(np.int64)
    g, b = np.divmod(present, width)
    return np.column_stack([g, b + low, summed])


def finalize(part: Partial, plan: Plan) -> pd.DataFrame:
    """Partial -> the answer: key columns then metrics in the order asked, sorted by keys."""
    groups = part.keys.num_rows if plan.keys else 1
    if plan.keys:
        order = [(k, "ascending", "at_end") for k in plan.keys]
        perm = pc.sort_indices(part.keys, sort_keys=order).to_numpy()
    else:
        perm = np.zeros(1, np.int64)
    columns = {k: _key_column(part.keys[k].take(perm)) for k in plan.keys}
    for m in plan.metrics:
        if m.kind == "quantile":
            values = _quantiles(part.sketches[m.column], m.q, groups)
        else:
            values = _metric(part, m)
        columns[m.name] = values[perm]
    return pd.DataFrame(columns)


def _key_column(values: pa.ChunkedArray) -> pd.Series | np.ndarray:
    # Timestamps keep their zone through pandas; the rest goes as NumPy, which is cheaper.
    if pa.types.is_timestamp(values.type):
        return values.to_pandas()
    return values.to_numpy(zero_copy_only=False)


def _metric(part: Partial, m: Metric) -> np.ndarray:
    stats = part.stats

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    def exact(values: np.ndarray, column: str) -> np.ndarray:
        """Sums and extremes of integer columns as integers where every group has one."""
        if column in part.integer and not np.isnan(values).any():
            return np.rint(values).astype(np.int64)
        return values

    if m.kind == "count":
        return stats[ROWS].astype(np.int64)
    if m.kind == "count_of":
        return stats[f"count:{m.column}"].astype(np.int64)
    if m.kind in ("min", "max"):
        return exact(stats[f"{m.kind}:{m.column}"], m.column)
    if m.kind == "sum":
        count = stats[f"count:{m.column}"]
        return exact(np.where(count > 0, stats[f"sum:{m.column}"], np.nan), m.column)
    if m.kind == "avg":
        return ratio(stats[f"sum:{m.column}"], stats[f"count:{m.column}"])
    if m.kind == "error_rate":
        return ratio(stats[f"sum:{ERR}"], stats[f"count:{ERR}"])
    if m.kind == "tokens_per_s":
        return ratio(stats[f"sum:{TPS_TOKENS}"], stats[f"sum:{TPS_MS}"]) * 1000.0
    if m.kind == "cost":
        return np.where(stats[f"count:{COST}"] > 0, stats[f"sum:{COST}"], np.nan)
    raise AssertionError(m.kind)


def _quantiles(rows: np.ndarray, q: float, groups: int) -> np.ndarray:
    """Per group the q-quantile of its sketch rows (sorted by group, then bucket)."""
    out = np.full(groups, np.nan)
    if not len(rows):
        return out
    group = rows[:, 0]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    out[group[starts]] = sketch.grouped_quantiles(rows[:, 1], rows[:, 2], starts, q)
    return out
