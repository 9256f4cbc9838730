"""What both engines share: the interface a LogStore delegates to, the Query that calls it,
and the steps both take around the parser (a chunk read and parsed, quarantined lines
numbered across chunks, the scan statistics, a query's plan).

The engines (arrow_engine.py, ray_engine.py) import this module and never each other, nor
the store facade (store.py), which picks one of them.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.logs.parse import ChunkSummary, Parsed, Quarantined, parse_buffer
from pipelines.logs.prices import PriceTable
from pipelines.logs.query import Plan, make_plan, parse_conditions
from pipelines.logs.schema import BUCKET_KEY, KNOWN_COLUMNS, TIME_KEYS
from pipelines.logs.sources import Chunk, FileShrank, LogFile, read_chunk

# Reasons that are about a file (from a line on) rather than one line.
UNREADABLE, FILE_SHRANK = "unreadable", "file_shrank"
FILE_REASONS = (UNREADABLE, FILE_SHRANK)

Filters = Sequence[Mapping[str, Any]]  # the keywords of each filter() call, ANDed


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


class Query:
    """Filters then one aggregate; filter() returns a new Query, so a base query can be reused."""

    def __init__(self, store: Engine, filters: tuple[Mapping[str, Any], ...] = ()) -> None:
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


class Engine(ABC):
    """Parsed logs and the one query path over them; LogStore delegates to one."""

    name = "base"

    def __init__(
        self,
        files: list[LogFile],
        prices: PriceTable,
        max_line_bytes: int,
        columns: Collection[str] | None = None,
    ) -> None:
        self.files = files
        self.prices = prices
        self.max_line_bytes = max_line_bytes
        # The columns built (None: all); every line is validated whatever they are.
        self.columns = None if columns is None else frozenset(columns)

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


def chunk_bytes_for(files: Sequence[LogFile], cpus: int, bounds: tuple[int, int]) -> int:
    """About four chunks per CPU, within bounds (per-chunk overhead vs memory per task)."""
    share = sum(f.size for f in files) // (4 * max(cpus, 1))
    return min(max(share, bounds[0]), bounds[1])


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


def parse_chunk(
    chunk: Chunk, max_line_bytes: int, columns: Collection[str] | None = None
) -> Parsed:
    """The chunk's lines parsed (only `columns` built, unless None). A file that cannot be
    read, or that shrank while it was read, is quarantined (reason unreadable or file_shrank,
    at the first line not read) rather than failing the job; the lines read before are kept."""
    path = chunk.file.path
    try:
        data = read_chunk(chunk, max_line_bytes)
    except FileShrank as short:
        parsed = parse_buffer(short.data, path, max_line=max_line_bytes, columns=columns)
        parsed.quarantined.append(Quarantined(path, parsed.lines + 1, FILE_SHRANK, str(short), ""))
        return parsed
    except OSError as error:
        parsed = parse_buffer(b"", path, columns=columns)
        parsed.quarantined.append(Quarantined(path, 1, UNREADABLE, str(error), ""))
        return parsed
    return parse_buffer(data, path, max_line=max_line_bytes, columns=columns)


def build_plan(
    columns: Iterable[str],
    filters: Filters,
    by: Sequence[str] | None,
    metrics: Mapping[str, str] | None,
    bucket: str | None,
) -> Plan:
    conditions = [c for conds in filters for c in parse_conditions(conds, columns)]
    return make_plan(conditions, by, metrics, bucket)


def possible_columns(filters: Filters, by: Sequence[str] | None) -> set[str]:
    """Every name a query may read as a column, before the data says which exist: the known
    columns, the group keys and what the filter keywords name."""
    names = set(KNOWN_COLUMNS) | {k for k in (by or ()) if k not in TIME_KEYS and k != BUCKET_KEY}
    for conds in filters:
        for key in conds:
            if key not in ("since", "until"):
                names.add(key[4:] if key[:4] in ("min_", "max_") else key)
    return names


def query_columns(
    filters: Filters = (),
    by: Sequence[str] | None = None,
    metrics: Mapping[str, str] | None = None,
    bucket: str | None = None,
) -> set[str]:
    """The columns a query (the arguments of filter() calls, then of aggregate()) reads: what
    LogStore.from_jsonl(columns=...) must load to answer it."""
    return build_plan(possible_columns(filters, by), filters, by, metrics, bucket).columns
