"""Arrow table helpers shared by the parsers: the canonical column order and types, string
dictionaries, and concatenation of chunk tables whose extra columns differ."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.logs.schema import KNOWN_TYPES


def encode_strings(table: pa.Table) -> pa.Table:
    """Dictionary-encode every string column (low-cardinality labels dominate log lines)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            table = table.set_column(i, f.name, pc.dictionary_encode(table.column(i)))
    return table


def records_to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Validated records -> a table with the known columns typed and extras inferred."""
    columns = {
        name: pa.array([r.get(name) for r in records], KNOWN_TYPES[name].value_type)
        if pa.types.is_dictionary(KNOWN_TYPES[name])
        else pa.array([r.get(name) for r in records], KNOWN_TYPES[name])
        for name in KNOWN_TYPES
    }
    extras: dict[str, list[Any]] = defaultdict(lambda: [None] * len(records))
    for row, record in enumerate(records):
        for name, value in record.items():
            if name not in KNOWN_TYPES:
                extras[name][row] = value
    for name, values in extras.items():
        columns[name] = _infer(values)
    return encode_strings(pa.table(columns))


def _infer(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except OverflowError:  # an integer past int64, which the validator keeps if it fits uint64
        try:
            return pa.array(values, pa.uint64())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Mixed types: keep them as JSON text
    return pa.array([v if isinstance(v, str | None) else json.dumps(v) for v in values])


def concat_tables(tables: list[pa.Table], known: Collection[str] = KNOWN_TYPES) -> pa.Table:
    """Concatenate chunk tables whose extra columns may differ; an extra column whose types
    clash across chunks (an int here, a string there) becomes JSON text everywhere. `known`:
    the known columns the tables hold (a load of some columns has no others, not nulls)."""
    tables = [normalize(t, known) for t in tables] or [normalize(pa.table({}), known)]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, set[pa.DataType]] = defaultdict(set)
    for t in tables:
        for f in t.schema:
            if f.name not in KNOWN_TYPES and not pa.types.is_null(f.type):
                types[f.name].add(f.type)
    clashing = {name for name, seen in types.items() if len(seen) > 1}
    tables = [_as_json_text(t, clashing) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _as_json_text(table: pa.Table, names: set[str]) -> pa.Table:
    for i, f in enumerate(table.schema):
        if f.name in names:
            values = table.column(i).to_pylist()
            text = [v if isinstance(v, str | None) else json.dumps(v, default=str) for v in values]
            table = table.set_column(i, f.name, pa.array(text, pa.string()))
    return encode_strings(table)


def normalize(table: pa.Table, known: Collection[str] = KNOWN_TYPES) -> pa.Table:
    """Known columns (those in `known`) first, with their types (missing ones all null), then
    extras."""
    columns = {}
    for name, type_ in KNOWN_TYPES.items():
        if name not in known:
            continue
        if name in table.column_names:
            column = table[name]
            columns[name] = column if column.type == type_ else pc.cast(column, type_)
        else:
            columns[name] = pa.nulls(table.num_rows, type_)
    for name in table.column_names:
        if name not in KNOWN_TYPES:
            columns[name] = table[name]
    return pa.table(columns)
