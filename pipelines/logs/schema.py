"""The typed columns every log line may carry; any other field is kept as an extra column."""

from __future__ import annotations

import pyarrow as pa

TS = "ts"
TIMESTAMP = pa.timestamp("us", tz="UTC")
STRING_COLUMNS = ("model", "route", "status")
FLOAT_COLUMNS = ("latency_ms",)
INT_COLUMNS = ("tokens_input", "tokens_output")

# What the fast path asks pyarrow.json for: ts stays a string there because the cast to a
# timestamp (offsets, fractions) is done afterwards, in one vectorised step.
RAW_SCHEMA = pa.schema(
    [(TS, pa.string())]
    + [(name, pa.string()) for name in STRING_COLUMNS]
    + [(name, pa.float64()) for name in FLOAT_COLUMNS]
    + [(name, pa.int64()) for name in INT_COLUMNS]
)
KNOWN_TYPES: dict[str, pa.DataType] = {
    TS: TIMESTAMP,
    **{name: pa.dictionary(pa.int32(), pa.string()) for name in STRING_COLUMNS},
    **{name: pa.float64() for name in FLOAT_COLUMNS},
    **{name: pa.int64() for name in INT_COLUMNS},
}
KNOWN_COLUMNS = tuple(KNOWN_TYPES)

# Longer lines are quarantined unparsed (line_too_long): one huge line would otherwise hold
# its bytes several times over in the parser, and all of them again in the quarantine.
MAX_LINE_BYTES = 16 << 20

# Group keys computed from ts rather than read from the log.
TIME_KEYS = {"minute": (1, "minute"), "hour": (1, "hour"), "day": (1, "day")}
BUCKET_KEY = "bucket"
