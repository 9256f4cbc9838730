"""LogStore: the seed API, a facade over two engines.

    store = LogStore.from_jsonl("logs/*.jsonl")            # engine="auto" | "arrow" | "ray"
    df = store.query().filter(model="gpt-4.1", min_latency_ms=500).aggregate(
        by=["route"], metrics={"n": "count", "p95": "p95(latency_ms)"})

When the queries are known before the load, `columns=` builds only what they read (the seed
query's columns: `query_columns(filters, by, metrics)`); the lines are validated in full all
the same, so the quarantine is the same, and a query reading another column is refused:

    cols = query_columns([{"model": "gpt-4.1"}], by=["route"], metrics={"n": "count"})
    store = LogStore.from_jsonl("logs/*.jsonl", columns=cols)

The Arrow engine (arrow_engine.py) parses everything into one in-memory table at load; the
Ray engine (ray_engine.py) keeps only the file list and, per query, parses and aggregates
each chunk inside Ray Data tasks. Both build on engine.py; this module only picks one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import pyarrow as pa

from pipelines.logs.engine import Engine, Query, ScanStats, query_columns
from pipelines.logs.parse import Quarantined
from pipelines.logs.prices import PriceTable, load_prices
from pipelines.logs.schema import MAX_LINE_BYTES
from pipelines.logs.sources import LogFile, Source, list_files
from refinery.storage import write_text

__all__ = [
    "LogStore",
    "Query",
    "ScanStats",
    "choose_engine",
    "query_columns",
    "write_quarantine",
]

# engine="auto" picks Ray past either threshold: many files or more bytes than one process
# should hold (an in-memory table takes about as much as the JSONL).
RAY_MIN_FILES = 64
RAY_MIN_BYTES = 2 << 30


class LogStore:
    """Parsed LLM logs you can query; build one with LogStore.from_jsonl()."""

    def __init__(self, backend: Engine) -> None:
        self.backend = backend

    @classmethod
    def from_jsonl(
        cls,
        source: Source,
        engine: str = "auto",
        prices: PriceTable | str | os.PathLike[str] | None = None,
        chunk_bytes: int | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        columns: Collection[str] | None = None,
    ) -> LogStore:
        """Logs from a path, glob, directory or URI (or a list of them); lines longer than
        `max_line_bytes` are quarantined unparsed.

        `columns`: build only these fields, known or extra (None: every field, extras
        typed). Typing the extra fields is the costliest part of a load after the scan, so
        a query that needs none of them answers sooner from a store loaded with its
        `query_columns()`. Every line is still checked in full: the quarantine and scan
        statistics do not depend on `columns`. The schema lists the columns built (with
        `model` when none of them is a known field: it holds the rows), and a query
        reading any other column raises UnknownColumnError."""
        files = list_files(source)
        price_table = prices if isinstance(prices, PriceTable) else load_prices(prices)
        engine = choose_engine(files) if engine == "auto" else engine
        if engine == "arrow":
            from pipelines.logs.arrow_engine import ArrowEngine

            return cls(ArrowEngine(files, price_table, chunk_bytes, max_line_bytes, columns))
        if engine == "ray":
            from pipelines.logs.ray_engine import RayEngine

            return cls(RayEngine(files, price_table, chunk_bytes, max_line_bytes, columns))
        raise ValueError(f"engine={engine!r}: expected 'auto', 'arrow' or 'ray'")

    @property
    def engine(self) -> str:
        return self.backend.name

    @property
    def files(self) -> list[LogFile]:
        return self.backend.files

    @property
    def prices(self) -> PriceTable:
        return self.backend.prices

    @property
    def scan(self) -> ScanStats:
        """What parsing found: lines, rows kept, quarantined per reason."""
        return self.backend.scan

    @property
    def quarantine(self) -> list[Quarantined]:
        """Every line that was not kept, with file, line number, reason and raw text."""
        return self.backend.quarantine

    @property
    def schema(self) -> pa.Schema:
        """Known columns then the extra fields found in the logs."""
        return self.backend.schema

    def query(self) -> Query:
        return Query(self.backend)


def choose_engine(files: Sequence[LogFile]) -> str:
    total = sum(f.size for f in files)
    return "ray" if len(files) >= RAY_MIN_FILES or total >= RAY_MIN_BYTES else "arrow"


def write_quarantine(records: Sequence[Quarantined], path: str | Path) -> None:
    """DIR/quarantine.jsonl: one JSON object per bad line (file, line, reason, detail, raw)."""
    lines = (json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in records)
    write_text(str(path), "".join(lines))
