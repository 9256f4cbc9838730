"""What a query asks for, parsed and checked once: filter conditions, group keys, metrics.

The plan is plain data (picklable) so the Ray engine ships it to its tasks unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from pipelines.logs.schema import BUCKET_KEY, TIME_KEYS, TS
from pipelines.logs.validate import BadLine, epoch_to_datetime, parse_timestamp


class QueryError(ValueError):
    """A query that cannot run: unknown column, bad metric, wrong type."""


class UnknownColumnError(QueryError):
    def __init__(self, column: str, where: str, known: Iterable[str]) -> None:
        self.column = column
        super().__init__(
            f"unknown column {column!r} in {where}; known columns: {', '.join(sorted(known))}"
        )


@dataclass(frozen=True)
class Condition:
    column: str
    op: str  # in | min | max (bounds inclusive) | until (exclusive, on ts)
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Metric:
    name: str  # output column
    # count | count_of | sum | avg | min | max | quantile | error_rate | tokens_per_s | cost
    kind: str
    column: str | None = None
    q: float | None = None


NEEDS_COLUMNS = {  # fixed inputs of the derived metrics
    "error_rate": ("status",),
    "tokens_per_s": ("tokens_output", "latency_ms"),
    "cost": ("model", "tokens_input", "tokens_output"),
}
_NUMERIC_KINDS = {"sum", "avg", "min", "max", "quantile"}
_METRIC = re.compile(r"^\s*(\w+)\s*\(\s*([^()\s]+)\s*\)\s*$")
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
_BUCKET = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d)\s*$")
_UNITS = {"s": "second", "m": "minute", "min": "minute", "h": "hour", "d": "day"}
METRIC_FORMS = (
    "count, count(col), sum(col), avg(col), min(col), max(col), p50(col) .. p99.9(col), "
    "error_rate, tokens_per_s, cost"
)


def parse_metric(name: str, spec: str) -> Metric:
    text = spec.strip().lower()
    if text in ("count", "count(*)"):
        return Metric(name, "count")
    if text in NEEDS_COLUMNS:
        return Metric(name, text)
    match = _METRIC.match(spec)
    if match:
        func, column = match.group(1).lower(), match.group(2)
        if func in ("sum", "min", "max"):
            return Metric(name, func, column)
        if func in ("avg", "mean"):
            return Metric(name, "avg", column)
        if func == "count":
            return Metric(name, "count_of", column)
        percentile = _PERCENTILE.match(func)
        if percentile and 0 < float(percentile.group(1)) < 100:
            return Metric(name, "quantile", column, float(percentile.group(1)) / 100)
    raise QueryError(f"metric {name!r}: cannot read {spec!r}; forms: {METRIC_FORMS}")


def parse_bucket(bucket: str) -> tuple[int, str]:
    match = _BUCKET.match(bucket)
    if not match or int(match.group(1)) < 1:
        raise QueryError(f"bucket={bucket!r}: expected a size like 30s, 5m, 1h or 1d")
    return int(match.group(1)), _UNITS[match.group(2)]


def parse_conditions(conds: Mapping[str, Any], columns: Iterable[str]) -> list[Condition]:
    """filter() keywords -> conditions. A key that is a column is equality (a list: IN);
    else min_COL / max_COL are inclusive bounds and since / until bound ts."""
    known = set(columns)
    out = []
    for key, value in conds.items():
        if key in known:
            values = tuple(value) if isinstance(value, list | tuple | set | frozenset) else (value,)
            out.append(Condition(key, "in", values))
        elif key in ("since", "until") and TS in known:
            out.append(Condition(TS, "min" if key == "since" else "until", (to_datetime(value),)))
        elif key[:4] in ("min_", "max_") and key[4:] in known:
            column = key[4:]
            bound = to_datetime(value) if column == TS else value
            out.append(Condition(column, key[:3], (bound,)))
        else:
            name = key[4:] if key[:4] in ("min_", "max_") else key
            raise UnknownColumnError(name, f"filter({key}=...)", known)
    return out


def to_datetime(value: Any) -> datetime:
    """since/until values: a datetime, an ISO-8601 string or epoch seconds."""
    try:
        if isinstance(value, datetime):
            return parse_timestamp(value.isoformat())
        if isinstance(value, str):
            return parse_timestamp(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return epoch_to_datetime(value)
    except BadLine as error:
        raise QueryError(str(error)) from None
    raise QueryError(f"expected a datetime, ISO-8601 string or epoch seconds, got {value!r}")


@dataclass(frozen=True)
class Plan:
    conditions: tuple[Condition, ...]
    keys: tuple[str, ...]  # output key columns: data columns, minute/hour/day, bucket
    metrics: tuple[Metric, ...]
    bucket: tuple[int, str] | None = None

    @property
    def columns(self) -> set[str]:
        """Data columns the plan reads."""
        needed = {c.column for c in self.conditions}
        needed.update(k for k in self.keys if k not in TIME_KEYS and k != BUCKET_KEY)
        if any(k in TIME_KEYS or k == BUCKET_KEY for k in self.keys):
            needed.add(TS)
        for m in self.metrics:
            needed.update(NEEDS_COLUMNS.get(m.kind, ()))
            if m.column:
                needed.add(m.column)
        return needed

    def check(self, schema: pa.Schema) -> None:
        """Unknown columns and metrics over non-numeric columns are errors."""
        names = set(schema.names)
        for cond in self.conditions:
            if cond.column not in names:
                raise UnknownColumnError(cond.column, "filter()", names)
            type_ = schema.field(cond.column).type
            if cond.op != "in" and not (is_numeric(type_) or pa.types.is_timestamp(type_)):
                raise QueryError(f"filter: {cond.op}_{cond.column}: {cond.column!r} is {type_}")
            bound = cond.values[0]
            if cond.op in ("min", "max") and is_numeric(type_) and not _is_number(bound):
                raise QueryError(f"filter: {cond.op}_{cond.column}={bound!r}: expected a number")
        for key in self.keys:
            if key not in names and key not in TIME_KEYS and key != BUCKET_KEY:
                raise UnknownColumnError(key, "aggregate(by=...)", names)
        for m in self.metrics:
            if m.column and m.column not in names:
                raise UnknownColumnError(m.column, f"metric {m.name!r}", names)
            type_ = schema.field(m.column).type if m.column else None
            if m.kind in _NUMERIC_KINDS and not is_numeric(type_):
                raise QueryError(f"metric {m.name!r}: {m.column!r} is {type_}, not a number")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_null(type_)


def make_plan(
    conditions: Iterable[Condition],
    by: Iterable[str] | None,
    metrics: Mapping[str, str] | None,
    bucket: str | None,
) -> Plan:
    keys = list(by or ())
    if isinstance(by, str):
        raise QueryError(f"by={by!r}: expected a list of columns, e.g. by=[{by!r}]")
    size = parse_bucket(bucket) if bucket else None
    if size and BUCKET_KEY not in keys:
        keys.append(BUCKET_KEY)
    if BUCKET_KEY in keys and not size:
        raise QueryError("by=[..., 'bucket']: pass bucket='1h' (or another size) as well")
    if len(set(keys)) != len(keys):
        raise QueryError(f"by={keys}: a key appears twice")
    specs = metrics if metrics is not None else {"count": "count"}
    if not specs:
        raise QueryError("metrics: ask for at least one, e.g. {'count': 'count'}")
    clash = set(specs) & set(keys)
    if clash:
        raise QueryError(f"metric names {sorted(clash)} clash with group keys")
    parsed = tuple(parse_metric(name, spec) for name, spec in specs.items())
    return Plan(tuple(conditions), tuple(keys), parsed, size)
