"""The line-by-line validator: json.loads plus type checks on the known fields.

The slow path of parsing: it sees only lines the fast path could not take, keeps the valid
but unusual ones (epoch timestamps, integral floats) and names what is wrong with the rest.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from pipelines.logs.schema import FLOAT_COLUMNS, INT_COLUMNS, STRING_COLUMNS, TS


class BadLine(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def check_line(raw: bytes) -> dict[str, Any]:
    """One line -> a record with known fields coerced to their types, or BadLine."""
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark is not part of the line
    except UnicodeDecodeError as error:
        raise BadLine("invalid_utf8", str(error)) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadLine("invalid_json", str(error)) from None
    if not isinstance(value, dict):
        raise BadLine("not_object", f"expected a JSON object, got {type(value).__name__}")
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
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return epoch_to_datetime(value)
    raise _wrong_type(TS, "an ISO-8601 string or epoch number", value)


def parse_timestamp(text: str) -> datetime:
    """ISO-8601 with Z, an offset or none (read as UTC)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadLine("bad_timestamp", f"ts: cannot parse {text[:80]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def epoch_to_datetime(value: float) -> datetime:
    """Epoch seconds, or milliseconds / microseconds when the number is too large for seconds
    (1e11 s is the year 5138), as loggers write all three."""
    for scale in (1, 1e3, 1e6):
        if abs(value) < 1e11 * scale:
            return datetime.fromtimestamp(value / scale, UTC)
    raise BadLine("bad_timestamp", f"ts: epoch value {value} out of range")
