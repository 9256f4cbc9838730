"""JSONL bytes -> a typed Arrow table, with every bad line quarantined by line number.

1. scan.py reads the buffer once in compiled code: line bounds, JSON validation and the
   known fields as typed arrays (FAST lines), and the lines it leaves to the validator (SLOW);
2. the known columns are built from those arrays with no per-row Python; extra fields, copied
   aside by the scan, are typed by pyarrow.json;
3. the validator (json.loads + type checks) keeps the valid-but-unusual SLOW lines (epoch
   timestamps, escapes, nested extras) and quarantines the rest with a reason; a line over
   the length limit is quarantined without being parsed.

Given `columns`, only those are built (step 2 skips the others, and the typing of extra fields
when none is asked for); every line is still scanned and validated in full, so what is
quarantined does not depend on the columns.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from pipelines.logs import scan as scanner
from pipelines.logs.schema import (
    FLOAT_COLUMNS,
    INT_COLUMNS,
    KNOWN_TYPES,
    MAX_LINE_BYTES,
    STRING_COLUMNS,
    TS,
)
from pipelines.logs.tables import concat_tables, encode_strings, records_to_table
from pipelines.logs.validate import BadLine, check_line

# The known fields as the scan reads them, in its order.
_FIELDS = (TS, *STRING_COLUMNS, *FLOAT_COLUMNS, *INT_COLUMNS)
_KINDS = (
    [scanner.TS_KIND]
    + [scanner.STRING_KIND] * len(STRING_COLUMNS)
    + [scanner.FLOAT_KIND] * len(FLOAT_COLUMNS)
    + [scanner.INT_KIND] * len(INT_COLUMNS)
)
_NAMES = [name.encode() for name in _FIELDS]
RAW_PREFIX_BYTES = 1 << 12  # what the quarantine keeps of a line over the length limit


@dataclass(slots=True)
class Quarantined:
    file: str
    line: int  # 1-based line number in the file
    # invalid_json | invalid_utf8 | not_object | wrong_type | bad_timestamp | non_finite |
    # int_out_of_range | too_deep | line_too_long; for a whole file or its rest, from `line`
    # on: unreadable | file_shrank
    reason: str
    detail: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
            "raw": self.raw,
        }


@dataclass
class ChunkSummary:
    """What parsing a chunk found, without its rows (what the Ray tasks send back)."""

    rows: int
    lines: int  # lines in the buffer, blank ones included, for numbering the next chunk
    blank: int
    quarantined: list[Quarantined] = field(default_factory=list)


@dataclass
class Parsed:
    table: pa.Table
    lines: int
    blank: int
    quarantined: list[Quarantined] = field(default_factory=list)

    def summary(self) -> ChunkSummary:
        return ChunkSummary(self.table.num_rows, self.lines, self.blank, self.quarantined)


def parse_buffer(
    data: bytes | memoryview,
    file: str,
    first_line: int = 1,
    max_line: int = MAX_LINE_BYTES,
    columns: Collection[str] | None = None,
) -> Parsed:
    """Parse JSONL `data` whose first line is line `first_line` of `file`; lines of more than
    `max_line` bytes (without their line ending) are quarantined. `columns`: build only these
    (known or extra; None: all); the lines are validated in full either way."""
    wanted = built_columns(columns)
    found = scanner.scan(data, _NAMES, _KINDS, max_line)
    tables = [_fast_table(data, found, wanted)]
    records: list[dict[str, Any]] = []
    quarantined: list[Quarantined] = []
    for i, start, end in found.slow.tolist():
        if end - start > max_line:
            quarantined.append(_too_long(data[start:end], file, first_line + i, max_line))
            continue
        raw = bytes(data[start:end])
        try:
            records.append(check_line(raw))
        except BadLine as bad:
            text = raw.decode("utf-8", errors="replace")
            quarantined.append(Quarantined(file, first_line + i, bad.reason, str(bad), text))
    if records:
        table = records_to_table(records)
        if wanted is not None:
            table = table.select([name for name in table.column_names if name in wanted])
        tables.append(table)
    return Parsed(concat_tables(tables, known_built(wanted)), found.lines, found.blank, quarantined)


def built_columns(columns: Collection[str] | None) -> frozenset[str] | None:
    """What a parse asked for `columns` builds (None: everything)."""
    if columns is None:
        return None
    wanted = frozenset(columns)
    if not wanted & KNOWN_TYPES.keys():
        # A table of no columns loses its row count when chunks are joined: one known column
        # (a small dictionary) holds the rows.
        wanted |= {STRING_COLUMNS[0]}
    return wanted


def known_built(wanted: frozenset[str] | None) -> list[str]:
    """The known columns among `built_columns()`, in the canonical order."""
    return [name for name in KNOWN_TYPES if wanted is None or name in wanted]


def _too_long(line: bytes | memoryview, file: str, number: int, max_line: int) -> Quarantined:
    head = bytes(line[:RAW_PREFIX_BYTES]).decode("utf-8", errors="replace")
    # No length: the reader stops a little past the limit, not at the line's end.
    detail = (
        f"over the limit of {max_line} bytes (max_line_bytes); "
        f"raw holds its first {min(len(line), RAW_PREFIX_BYTES)}"
    )
    return Quarantined(file, number, "line_too_long", detail, head)


def _fast_table(
    data: bytes | memoryview, found: scanner.Scan, wanted: frozenset[str] | None
) -> pa.Table:
    """The FAST lines as a table: known columns typed, then their extra fields (of those,
    the ones in `wanted` unless it is None)."""
    columns = {}
    for f, (name, kind) in enumerate(zip(_FIELDS, _KINDS, strict=True)):
        if wanted is not None and name not in wanted:
            continue
        valid = found.valid[f]
        mask = None if valid.all() else ~valid
        if kind == scanner.STRING_KIND:
            words = scanner.gather_strings(data, found.dictionaries[f, : found.distinct[f]])
            words, remap = scanner.decode_strings(words)
            codes = found.integers[f].astype(np.int32)
            if remap is not None:  # escaped and plain spellings of one value: one code
                codes = remap[np.where(valid, codes, 0)]
            column = pa.DictionaryArray.from_arrays(pa.array(codes, mask=mask), words)
        elif kind == scanner.FLOAT_KIND:
            scanner.deferred_numbers(found.numbers[f], found.integers[f], valid)
            column = pa.array(found.numbers[f], KNOWN_TYPES[name], mask=mask)
        else:  # ints, and ts as microseconds
            column = pa.array(found.integers[f], KNOWN_TYPES[name], mask=mask)
        columns[name] = column
    table = pa.table(columns)
    # Typing the extras is most of this function's work on logs that have them: skipped
    # when the columns asked for are all known ones.
    asks_extras = wanted is None or any(name not in KNOWN_TYPES for name in wanted)
    if not len(found.extras) or not asks_extras:
        return table
    extras = _extras_table(found.extras)
    if wanted is not None:
        extras = extras.select([name for name in extras.column_names if name in wanted])
    # Row r of the table takes extras row extra_lines[r], or nulls where it has no extras.
    lines = found.extra_lines
    index = pa.array(lines, mask=lines < 0)
    for name in extras.column_names:
        table = table.append_column(name, extras[name].take(index))
    return table


def _extras_table(lines: np.ndarray) -> pa.Table:
    """The extra fields, validated `{...}` lines: pyarrow.json types them; where it cannot
    (a type clash, a key twice), json.loads and the validator's inference do."""
    data = lines.tobytes()
    try:
        options = pj.ReadOptions(use_threads=False, block_size=len(data) + 1)
        return encode_strings(pj.read_json(pa.py_buffer(data), options))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        records = [json.loads(line) for line in data.splitlines()]
        return records_to_table(records).drop_columns(list(KNOWN_TYPES))
