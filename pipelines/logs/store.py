"""LogStore: the seed API over two engines.

    store = LogStore.from_jsonl("logs/*.jsonl")            # engine="auto" | "arrow" | "ray"
    df = store.query().filter(model="gpt-4.1", min_latency_ms=500).aggregate(
        by=["route"], metrics={"n": "count", "p95": "p95(latency_ms)"})

The Arrow engine parses everything into one in-memory table at load; the Ray engine keeps
only the file list and, per query, parses and aggregates each chunk inside Ray Data tasks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.logs.aggregate import Partial, finalize, merge, partial
from pipelines.logs.parse import ChunkSummary, Parsed, Quarantined, parse_buffer
from pipelines.logs.prices import PriceTable, load_prices
from pipelines.logs.query import Plan, make_plan, parse_conditions
from pipelines.logs.schema import MAX_LINE_BYTES
from pipelines.logs.sources import (
    Chunk,
    FileShrank,
    LogFile,
    Source,
    list_files,
    plan_chunks,
    read_chunk,
)
from pipelines.logs.tables import concat_tables
from refinery.storage import write_text

# engine="auto" picks Ray past either threshold: many files or more bytes than one process
# should hold (an in-memory table takes about as much as the JSONL).
RAY_MIN_FILES = 64
RAY_MIN_BYTES = 2 << 30
# The Arrow engine parses chunks in threads: a few chunks per core keeps them all busy.
ARROW_CHUNK_BYTES = (1 << 20, 64 << 20)
# The table is kept in pieces of at least this many rows (smaller parsed chunks are joined),
# each one chunk with its own dictionaries; a query makes one partial per piece, in threads.
# Joining every chunk into one table cost 0.4 s at 10M rows; each partial has a fixed cost of
# about 0.5 ms (Python around the compiled passes), small next to 100k rows' work.
PIECE_ROWS = 100_000
# Reasons that are about a file (from a line on) rather than one line.
UNREADABLE, FILE_SHRANK = "unreadable", "file_shrank"
FILE_REASONS = (UNREADABLE, FILE_SHRANK)


@dataclass
class ScanStats:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    rows: int = 0
    blank: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "quarantined": dict(sorted(self.quarantined.items()))}


Filters = Sequence[Mapping[str, Any]]  # the keywords of each filter() call, ANDed


class LogStore(ABC):
    """Parsed LLM logs you can query; build one with LogStore.from_jsonl()."""

    engine = "base"

    def __init__(self, files: list[LogFile], prices: PriceTable, max_line_bytes: int) -> None:
        self.files = files
        self.prices = prices
        self.max_line_bytes = max_line_bytes

    @classmethod
    def from_jsonl(
        cls,
        source: Source,
        engine: str = "auto",
        prices: PriceTable | str | os.PathLike[str] | None = None,
        chunk_bytes: int | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> LogStore:
        """Logs from a path, glob, directory or URI (or a list of them); lines longer than
        `max_line_bytes` are quarantined unparsed."""
        files = list_files(source)
        price_table = prices if isinstance(prices, PriceTable) else load_prices(prices)
        engine = choose_engine(files) if engine == "auto" else engine
        if engine == "arrow":
            size = chunk_bytes or arrow_chunk_bytes(files)
            return ArrowLogStore(files, price_table, size, max_line_bytes)
        if engine == "ray":
            from pipelines.logs.ray_engine import RayLogStore, ray_chunk_bytes

            size = chunk_bytes or ray_chunk_bytes(files)
            return RayLogStore(files, price_table, size, max_line_bytes)
        raise ValueError(f"engine={engine!r}: expected 'auto', 'arrow' or 'ray'")

    def query(self) -> Query:
        return Query(self)

    @property
    @abstractmethod
    def scan(self) -> ScanStats:
        """What parsing found: lines, rows kept, quarantined per reason."""

    @property
    @abstractmethod
    def quarantine(self) -> list[Quarantined]:
        """Every line that was not kept, with file, line number, reason and raw text."""

    @property
    @abstractmethod
    def schema(self) -> pa.Schema:
        """Known columns then the extra fields found in the logs."""

    @abstractmethod
    def run(
        self,
        filters: Filters,
        by: Sequence[str] | None,
        metrics: Mapping[str, str] | None,
        bucket: str | None,
    ) -> pd.DataFrame:
        """Answer one query; Query.aggregate() calls this."""


class Query:
    """Filters then one aggregate; filter() returns a new Query, so a base query can be reused."""

    def __init__(self, store: LogStore, filters: tuple[Mapping[str, Any], ...] = ()) -> None:
        self._store = store
        self._filters = filters

    def filter(self, **conds: Any) -> Query:
        """`col=value`, `col=[v1, v2]`, `min_col=`, `max_col=`, `since=`, `until=`; all ANDed."""
        return Query(self._store, self._filters + (conds,))

    def aggregate(
        self,
        by: Sequence[str] | None = None,
        metrics: Mapping[str, str] | None = None,
        bucket: str | None = None,
    ) -> pd.DataFrame:
        """One row per group (sorted by the keys), key columns then metrics in the order asked."""
        return self._store.run(self._filters, by, metrics, bucket)


def arrow_chunk_bytes(files: Sequence[LogFile]) -> int:
    return chunk_bytes_for(files, os.cpu_count() or 1, ARROW_CHUNK_BYTES)


def chunk_bytes_for(files: Sequence[LogFile], cpus: int, bounds: tuple[int, int]) -> int:
    """About four chunks per CPU, within bounds (per-chunk overhead vs memory per task)."""
    share = sum(f.size for f in files) // (4 * max(cpus, 1))
    return min(max(share, bounds[0]), bounds[1])


def choose_engine(files: Sequence[LogFile]) -> str:
    total = sum(f.size for f in files)
    return "ray" if len(files) >= RAY_MIN_FILES or total >= RAY_MIN_BYTES else "arrow"


def number_lines(chunks: Sequence[Chunk], parsed: Sequence[ChunkSummary]) -> list[Quarantined]:
    """Chunk-relative line numbers -> file line numbers, adding the lines of earlier chunks
    (in place: the records are the parser's own). A file that could not be read, or not to
    its end, is reported once, by its first chunk that found it so."""
    offsets: dict[str, int] = {}
    reported: set[tuple[str, str]] = set()
    out = []
    for chunk, result in sorted(zip(chunks, parsed, strict=True), key=_chunk_order):
        offset = offsets.get(chunk.file.path, 0)
        for q in result.quarantined:
            q.line += offset
            if q.reason in FILE_REASONS:
                if (q.file, q.reason) in reported:
                    continue
                reported.add((q.file, q.reason))
            out.append(q)
        offsets[chunk.file.path] = offset + result.lines
    return out


def _chunk_order(pair: tuple[Chunk, ChunkSummary]) -> tuple[str, int]:
    return pair[0].file.path, pair[0].index


def scan_stats(
    files: Sequence[LogFile], parsed: Sequence[ChunkSummary], quarantine: Sequence[Quarantined]
) -> ScanStats:
    stats = ScanStats(files=len(files), bytes=sum(f.size for f in files))
    for result in parsed:
        stats.lines += result.lines
        stats.rows += result.rows
        stats.blank += result.blank
    stats.quarantined.update(q.reason for q in quarantine)
    return stats


def parse_chunk(chunk: Chunk, max_line_bytes: int) -> Parsed:
    """The chunk's lines parsed. A file that cannot be read, or that shrank while it was read,
    is quarantined (reason unreadable or file_shrank, at the first line not read) rather than
    failing the job; the lines read before are kept."""
    path = chunk.file.path
    try:
        data = read_chunk(chunk, max_line_bytes)
    except FileShrank as short:
        parsed = parse_buffer(short.data, path, max_line=max_line_bytes)
        parsed.quarantined.append(Quarantined(path, parsed.lines + 1, FILE_SHRANK, str(short), ""))
        return parsed
    except OSError as error:
        parsed = parse_buffer(b"", path)
        parsed.quarantined.append(Quarantined(path, 1, UNREADABLE, str(error), ""))
        return parsed
    return parse_buffer(data, path, max_line=max_line_bytes)


class ArrowLogStore(LogStore):
    """Everything in one process: parse at load (threads over chunks), query the table."""

    engine = "arrow"

    def __init__(
        self, files: list[LogFile], prices: PriceTable, chunk_bytes: int, max_line_bytes: int
    ) -> None:
        super().__init__(files, prices, max_line_bytes)
        chunks = plan_chunks(files, chunk_bytes)
        with ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
            parsed = list(pool.map(lambda c: parse_chunk(c, max_line_bytes), chunks))
        summaries = [p.summary() for p in parsed]
        self._quarantine = number_lines(chunks, summaries)
        self._scan = scan_stats(files, summaries, self._quarantine)
        self.table = in_pieces(concat_tables([p.table for p in parsed]), PIECE_ROWS)

    @property
    def scan(self) -> ScanStats:
        return self._scan

    @property
    def quarantine(self) -> list[Quarantined]:
        return self._quarantine

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def run(
        self,
        filters: Filters,
        by: Sequence[str] | None,
        metrics: Mapping[str, str] | None,
        bucket: str | None,
    ) -> pd.DataFrame:
        plan = build_plan(self.schema.names, filters, by, metrics, bucket)
        plan.check(self.schema)
        pieces = self.table.to_batches()
        if len(pieces) <= 1:
            return finalize(partial(self.table, plan, self.prices), plan)
        # The kernels and Arrow release the GIL: pieces aggregate in parallel, then merge.
        with ThreadPoolExecutor(max_workers=min(len(pieces), os.cpu_count() or 1)) as pool:
            parts = list(pool.map(lambda piece: self._partial(piece, plan), pieces))
        return finalize(merge(parts, plan), plan)

    def _partial(self, piece: pa.RecordBatch, plan: Plan) -> Partial:
        return partial(pa.Table.from_batches([piece]), plan, self.prices)


def in_pieces(table: pa.Table, rows: int) -> pa.Table:
    """`table` as chunks of at least `rows` rows (but the last), consecutive small chunks
    joined into one with one dictionary per column; chunks that are large enough are kept."""
    pieces: list[pa.RecordBatch] = []
    group: list[pa.RecordBatch] = []
    grouped = 0
    for batch in table.to_batches():
        group.append(batch)
        grouped += batch.num_rows
        if grouped >= rows:
            pieces += _joined(group, table.schema)
            group, grouped = [], 0
    pieces += _joined(group, table.schema)
    return pa.Table.from_batches(pieces, table.schema)


def _joined(batches: list[pa.RecordBatch], schema: pa.Schema) -> list[pa.RecordBatch]:
    if len(batches) <= 1:
        return batches
    table = pa.Table.from_batches(batches, schema).unify_dictionaries().combine_chunks()
    return table.to_batches()


def build_plan(
    columns: Iterable[str],
    filters: Filters,
    by: Sequence[str] | None,
    metrics: Mapping[str, str] | None,
    bucket: str | None,
) -> Plan:
    conditions = [c for conds in filters for c in parse_conditions(conds, columns)]
    return make_plan(conditions, by, metrics, bucket)


def write_quarantine(records: Sequence[Quarantined], path: str | Path) -> None:
    """DIR/quarantine.jsonl: one JSON object per bad line (file, line, reason, detail, raw)."""
    lines = (json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in records)
    write_text(str(path), "".join(lines))
