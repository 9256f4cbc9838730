"""The line-by-line validator: json.loads plus type checks on the known fields.

The slow path of parsing: it sees only lines the fast path could not take, keeps the valid
but unusual ones (epoch timestamps, integral floats) and names what is wrong with the rest.
Numbers are finite doubles and integers that fit 64 bits (int64 for the known fields, int64
or uint64 for extras), nesting is bounded and timestamps lie in years 1 to 9999 UTC: past
those, a line would poison the aggregates or fail a whole chunk (Arrow, pandas, the chart).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from pipelines.logs.schema import FLOAT_COLUMNS, INT_COLUMNS, STRING_COLUMNS, TS

MAX_DEPTH = 64  # objects and arrays nested deeper than this are quarantined
# An escape that may be half of a surrogate pair: json.loads keeps a lone one, which is no
# text (it cannot be encoded, and would fail the chunk's Arrow table).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_INT_RANGE = (-(2**63), 2**64)  # int64 or uint64


class BadLine(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _non_finite(text: str) -> float:
    raise BadLine("non_finite", f"{text} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # a literal past the double range, like 1e400
        raise BadLine("non_finite", f"{text[:80]} overflows a double")
    return value


def _int64(text: str) -> int:
    # Digits are counted before int() converts them: Python refuses past 4300 digits, and
    # converting thousands of digits costs more than the line is worth.
    digits = len(text) - (text[0] == "-")
    value = int(text) if digits <= 20 else None
    if value is None or not _INT_RANGE[0] <= value < _INT_RANGE[1]:
        shown = text if digits <= 40 else f"{text[:20]}... ({digits} digits)"
        raise BadLine("int_out_of_range", f"{shown} does not fit 64 bits")
    return value


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_int=_int64, parse_constant=_non_finite)


def check_line(raw: bytes) -> dict[str, Any]:
    """One line -> a record with known fields coerced to their types, or BadLine."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadLine("invalid_utf8", str(error)) from None
    if text[:1] == "\ufeff":  # a byte order mark is not part of the line
        text = text[1:]
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise BadLine("invalid_json", str(error)) from None
    except RecursionError:
        raise BadLine("too_deep", f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise BadLine("not_object", f"expected a JSON object, got {type(value).__name__}")
    if _SURROGATE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as error:
            raise BadLine("invalid_utf8", f"a lone surrogate escape: {error}") from None
    # Brackets bound the depth from above: only lines with many are walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise BadLine("too_deep", f"nested deeper than {MAX_DEPTH} levels")
    record = dict(value)
    for name in STRING_COLUMNS:
        if not isinstance(record.get(name), str | None):
            raise _wrong_type(name, "a string", record[name])
    for name in FLOAT_COLUMNS:
        record[name] = _number(name, record.get(name), integral=False)
    for name in INT_COLUMNS:
        record[name] = _number(name, record.get(name), integral=True)
    record[TS] = _timestamp(record.get(TS))
    return record


def _depth(value: Any) -> int:
    """Levels of objects and arrays in a parsed JSON value (a scalar is 0)."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            level.extend((child, depth + 1) for child in children)
    return deepest


def _wrong_type(name: str, expected: str, value: Any) -> BadLine:
    return BadLine("wrong_type", f"{name}: expected {expected}, got {json.dumps(value)[:80]}")


def _number(name: str, value: Any, integral: bool) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(name, "an integer" if integral else "a number", value)
    if integral:
        if isinstance(value, float) and not value.is_integer():
            raise _wrong_type(name, "an integer", value)
        if not -(2**63) <= value < 2**63:  # would fail the whole chunk's int64 column
            raise _wrong_type(name, "a 64-bit integer", value)
        return int(value)
    return float(value)


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_timestamp(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch_to_datetime(value)
    raise _wrong_type(TS, "an ISO-8601 string or epoch number", value)


def parse_timestamp(text: str) -> datetime:
    """ISO-8601 with Z, an offset or none (read as UTC), in years 1 to 9999 UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadLine("bad_timestamp", f"ts: cannot parse {text[:80]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in the year 0
        raise BadLine("bad_timestamp", f"ts: {text[:80]!r} is out of range in UTC") from None


def epoch_to_datetime(value: float) -> datetime:
    """Epoch seconds, or milliseconds / microseconds when the number is too large for seconds
    (1e11 s is the year 5138), as loggers write all three."""
    for scale in (1, 1e3, 1e6):
        if abs(value) < 1e11 * scale:
            try:
                return datetime.fromtimestamp(value / scale, UTC)
            except (ValueError, OverflowError, OSError):  # before the year 1
                break
    raise BadLine("bad_timestamp", f"ts: epoch value {value} out of range")
