"""The in-process engine: every chunk parsed at load (threads over chunks) into one
in-memory table, kept in pieces; a query makes one partial per piece, in threads, and merges
them."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa

from pipelines.logs.aggregate import Partial, finalize, merge, partial
from pipelines.logs.engine import (
    Engine,
    Filters,
    ScanStats,
    build_plan,
    chunk_bytes_for,
    number_lines,
    parse_chunk,
    scan_stats,
)
from pipelines.logs.parse import Quarantined, built_columns, known_built
from pipelines.logs.prices import PriceTable
from pipelines.logs.query import Plan
from pipelines.logs.sources import LogFile, plan_chunks
from pipelines.logs.tables import concat_tables

# Chunks are parsed in threads: a few chunks per core keeps them all busy.
ARROW_CHUNK_BYTES = (1 << 20, 64 << 20)
# The table is kept in pieces of at least this many rows (smaller parsed chunks are joined),
# each one chunk with its own dictionaries; a query makes one partial per piece, in threads.
# Joining every chunk into one table cost a copy of the whole table at load; each partial
# has a fixed cost (Python around the compiled passes, which holds the GIL, so the threads
# take turns on it), small next to this many rows' work.
PIECE_ROWS = 100_000
# ... and no more than this many pieces per CPU: on a small table the pieces' fixed costs
# outweigh their rows' work, while two per CPU still let a thread that finishes early take
# over the work of one that was descheduled.
PIECES_PER_CPU = 2


def arrow_chunk_bytes(files: Sequence[LogFile]) -> int:
    return chunk_bytes_for(files, os.cpu_count() or 1, ARROW_CHUNK_BYTES)


class ArrowEngine(Engine):
    """Everything in one process: parse at load, query the table."""

    name = "arrow"

    def __init__(
        self,
        files: list[LogFile],
        prices: PriceTable,
        chunk_bytes: int | None,
        max_line_bytes: int,
        columns: Collection[str] | None = None,
    ) -> None:
        super().__init__(files, prices, max_line_bytes, columns)
        chunks = plan_chunks(files, chunk_bytes or arrow_chunk_bytes(files))
        with ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
            parsed = list(pool.map(lambda c: parse_chunk(c, max_line_bytes, columns), chunks))
        summaries = [p.summary() for p in parsed]
        self._quarantine = number_lines(chunks, summaries)
        self._scan = scan_stats(files, summaries, self._quarantine)
        known = known_built(built_columns(columns))
        table = concat_tables([p.table for p in parsed], known)
        self.table = in_pieces(table, piece_rows(table.num_rows))

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
        parts = list(_query_pool().map(lambda piece: self._partial(piece, plan), pieces))
        return finalize(merge(parts, plan), plan)

    def _partial(self, piece: pa.RecordBatch, plan: Plan) -> Partial:
        return partial(pa.Table.from_batches([piece]), plan, self.prices)


@functools.cache
def _query_pool() -> ThreadPoolExecutor:
    """The threads every query of the process shares: a pool started per query cost about
    what a piece's partial does, on every query."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="logs-query")


# A forked child has none of its parent's threads: it starts a pool of its own.
os.register_at_fork(after_in_child=_query_pool.cache_clear)


def piece_rows(rows: int) -> int:
    """The fewest rows a piece of a table of `rows` rows holds."""
    return max(PIECE_ROWS, math.ceil(rows / (PIECES_PER_CPU * (os.cpu_count() or 1))))


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
