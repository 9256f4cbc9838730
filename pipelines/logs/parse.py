"""JSONL bytes -> a typed Arrow table, with every bad line quarantined by line number.

pyarrow.json is fast but fails a whole buffer on one bad line (DESIGN.md), so:
1. lines that cannot be a JSON object (not `{...}`: garbage, truncated, arrays) are found
   with NumPy on the raw bytes and sent to the line-by-line validator;
2. the rest is parsed by pyarrow.json in sub-blocks; a failure names the row, so that one line
   goes to the validator and the lines around it are parsed again (bisecting when the error
   names no row);
3. the validator (json.loads + type checks) keeps valid-but-unusual lines (epoch timestamps,
   leading spaces) and quarantines the rest with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from pipelines.logs.schema import FLOAT_COLUMNS, INT_COLUMNS, RAW_SCHEMA, TIMESTAMP, TS
from pipelines.logs.tables import concat_tables, encode_strings, records_to_table
from pipelines.logs.validate import BadLine, check_line, parse_timestamp

SUB_BLOCK_BYTES = 1 << 20
_ROW_IN_ERROR = re.compile(r" in row (\d+)$")
_QUOTED_NUMBER = re.compile(
    r"Column\(/(" + "|".join(FLOAT_COLUMNS + INT_COLUMNS) + r")\) changed from number to string"
)
_READ = pj.ReadOptions(use_threads=False, block_size=4 * SUB_BLOCK_BYTES)
_PARSE = pj.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="infer")


@dataclass(frozen=True)
class Quarantined:
    file: str
    line: int  # 1-based line number in the file
    reason: str  # invalid_json | invalid_utf8 | not_object | wrong_type | bad_timestamp
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


def parse_buffer(data: bytes, file: str, first_line: int = 1) -> Parsed:
    """Parse JSONL `data` whose first line is line `first_line` of `file`."""
    lines = _Lines(data)
    work = bytearray(data)
    shaped = ~lines.blank & lines.braced
    shaped[_invalid_utf8(data, lines)] = False  # pyarrow.json passes such bytes through
    slow = list(np.flatnonzero(~lines.blank & ~shaped))
    _blank_out(work, lines, slow)
    tables, failed = _parse_fast(data, work, lines, shaped)
    slow.extend(failed)
    quarantined: list[Quarantined] = []
    records: list[dict[str, Any]] = []
    for i in sorted(slow):
        try:
            records.append(check_line(data[lines.starts[i] : lines.ends[i]]))
        except BadLine as bad:
            quarantined.append(_quarantine(data, lines, i, file, first_line, bad))
    typed = []
    for table, rows in tables:
        table, bad_ts = _type_fast_table(table)
        for row, error in bad_ts:
            quarantined.append(_quarantine(data, lines, rows[row], file, first_line, error))
        typed.append(table)
    if records:
        typed.append(records_to_table(records))
    quarantined.sort(key=lambda q: q.line)
    return Parsed(concat_tables(typed), lines.count, int(lines.blank.sum()), quarantined)


def _blank_out(work: bytearray, lines: _Lines, indices) -> None:
    """Overwrite lines with spaces: pyarrow.json skips them as empty, line numbers stay."""
    for i in indices:
        work[lines.starts[i] : lines.ends[i]] = b" " * int(lines.ends[i] - lines.starts[i])


def _quoted_numbers(data: bytes, lines: _Lines, line: int, name: str) -> np.ndarray:
    """Lines where the numeric field `name` holds a string (`"latency_ms": "abc"`), the
    commonest type error, written as on `line`: one byte search sends them all to the
    validator, where each would otherwise fail and re-parse its sub-block."""
    text = data[lines.starts[line] : lines.ends[line]]
    found = re.search(rb'"' + re.escape(name.encode()) + rb'"\s*:\s*"', text)
    if not found:
        return np.zeros(0, np.int64)
    hits, pos = [], data.find(found.group(0))
    while pos >= 0:
        hits.append(pos)
        pos = data.find(found.group(0), pos + 1)
    return np.unique(np.searchsorted(lines.starts, np.array(hits, np.int64), side="right") - 1)


def _invalid_utf8(data: bytes, lines: _Lines) -> np.ndarray:
    if lines.ascii:
        return np.zeros(0, np.int64)
    try:
        data.decode("utf-8")
        return np.zeros(0, np.int64)
    except UnicodeDecodeError:
        pass
    non_ascii = np.flatnonzero(np.frombuffer(data, np.uint8) >= 0x80)
    suspects = np.unique(np.searchsorted(lines.starts, non_ascii, "right") - 1)
    bad = []
    for i in suspects:
        try:
            data[lines.starts[i] : lines.ends[i]].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    return np.array(bad, np.int64)


class _Lines:
    """Line boundaries of a buffer, found with NumPy (no Python loop over lines)."""

    def __init__(self, data: bytes) -> None:
        raw = np.frombuffer(data, dtype=np.uint8)
        self.ascii = not len(raw) or int(raw.max()) < 0x80
        newlines = np.flatnonzero(raw == 10)
        starts = np.concatenate(([0], newlines + 1))
        ends = np.concatenate((newlines, [len(raw)]))
        if len(starts) and starts[-1] == len(raw):  # the buffer ends with a newline
            starts, ends = starts[:-1], ends[:-1]
        lengths = ends - starts
        last = raw[np.maximum(ends - 1, 0)] if len(raw) else np.zeros(0, np.uint8)
        ends = ends - ((lengths > 0) & (last == 13))  # CRLF
        self.starts, self.ends = starts, ends
        self.count = len(starts)
        self.blank = ends == starts
        if len(raw):
            first = raw[np.minimum(starts, len(raw) - 1)]
            last = raw[np.maximum(ends - 1, 0)]
            self.braced = (first == ord("{")) & (last == ord("}"))
        else:
            self.braced = np.zeros(0, bool)


def _parse_fast(
    data: bytes, work: bytearray, lines: _Lines, shaped: np.ndarray
) -> tuple[list[tuple[pa.Table, np.ndarray]], list[int]]:
    """pyarrow.json over sub-blocks of the `shaped` lines (of `work`, a copy of `data`);
    returns the tables with the line of each of their rows, and the lines it could not take."""
    view = memoryview(work)
    todo = _sub_blocks(lines, np.flatnonzero(shaped))
    tables, failed, searched = [], [], set()
    while todo:
        seg = todo.pop()
        seg = seg[shaped[seg]]  # drop lines diverted since the segment was made
        if not len(seg):
            continue
        try:
            start, end = int(lines.starts[seg[0]]), int(lines.ends[seg[-1]])
            table = pj.read_json(pa.BufferReader(view[start:end]), _READ, _PARSE)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            match = _ROW_IN_ERROR.search(str(error))
            k = int(match.group(1)) if match else -1
            quoted = _QUOTED_NUMBER.search(str(error))
            if quoted and 0 <= k < len(seg) and quoted.group(1) not in searched:
                searched.add(quoted.group(1))
                hits = _quoted_numbers(data, lines, int(seg[k]), quoted.group(1))
                hits = hits[shaped[hits]]
                if len(hits):
                    shaped[hits] = False
                    failed.extend(int(i) for i in hits)
                    _blank_out(work, lines, hits)
                    todo.append(seg)
                    continue
            if 0 <= k < len(seg):
                failed.append(int(seg[k]))
                todo.extend(s for s in (seg[:k], seg[k + 1 :]) if len(s))
            else:
                _bisect(seg, todo, failed)
            continue
        if table.num_rows == len(seg):
            tables.append((table, seg))
        else:  # e.g. `{"a":1}{"a":2}` on one line: rows no longer map to lines
            _bisect(seg, todo, failed)
    return tables, failed


def _bisect(seg: np.ndarray, todo: list[np.ndarray], failed: list[int]) -> None:
    if len(seg) == 1:
        failed.append(int(seg[0]))
    else:
        todo.extend((seg[: len(seg) // 2], seg[len(seg) // 2 :]))


def _sub_blocks(lines: _Lines, rows: np.ndarray) -> list[np.ndarray]:
    """Split `rows` where the byte offset crosses a multiple of SUB_BLOCK_BYTES."""
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(lines.starts[rows] // SUB_BLOCK_BYTES)) + 1
    return np.split(rows, cuts)


def _type_fast_table(table: pa.Table) -> tuple[pa.Table, list[tuple[int, BadLine]]]:
    """Cast ts to a timestamp and encode strings; rows whose ts does not parse are dropped and
    returned with the error."""
    bad: list[tuple[int, BadLine]] = []
    try:
        ts = pc.cast(table[TS], TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = []
        for row, text in enumerate(table[TS].to_pylist()):
            try:
                values.append(None if text is None else parse_timestamp(text))
            except BadLine as error:
                bad.append((row, error))
                values.append(None)
        ts = pa.array(values, TIMESTAMP)
    table = table.set_column(table.schema.get_field_index(TS), TS, ts)
    if bad:
        keep = np.ones(table.num_rows, bool)
        keep[[row for row, _ in bad]] = False
        table = table.filter(keep)
    return encode_strings(table), bad


def _quarantine(
    data: bytes, lines: _Lines, i: int, file: str, first_line: int, bad: BadLine
) -> Quarantined:
    raw = data[lines.starts[i] : lines.ends[i]].decode("utf-8", errors="replace")
    return Quarantined(file, first_line + int(i), bad.reason, str(bad), raw)
