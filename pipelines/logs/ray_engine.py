"""The Ray Data engine: per query, each chunk of the input is read, parsed, filtered and
partially aggregated inside a Ray Data task; only the small partials come back to be merged.

Ray Data's generic groupby shuffles every row and takes seconds for a handful of groups
(Ray issue 61016); a partial per block is one row per group.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.logs.aggregate import finalize, merge, partial
from pipelines.logs.engine import (
    Engine,
    Filters,
    ScanStats,
    build_plan,
    chunk_bytes_for,
    number_lines,
    parse_chunk,
    possible_columns,
    scan_stats,
)
from pipelines.logs.parse import Quarantined
from pipelines.logs.prices import PriceTable
from pipelines.logs.query import Plan
from pipelines.logs.sources import Chunk, LogFile, plan_chunks
from refinery.ray_runtime import without_reservation

RAY_CHUNK_BYTES = (4 << 20, 128 << 20)


class RayEngine(Engine):
    """Lazy: holds the file list; every query is one pass of Ray Data over the chunks."""

    name = "ray"

    def __init__(
        self,
        files: list[LogFile],
        prices: PriceTable,
        chunk_bytes: int | None,
        max_line_bytes: int,
        columns: Collection[str] | None = None,
    ) -> None:
        super().__init__(files, prices, max_line_bytes, columns)
        self.chunks = plan_chunks(files, chunk_bytes or ray_chunk_bytes(files))
        self._schema: pa.Schema | None = None
        self._scan: ScanStats | None = None
        self._quarantine: list[Quarantined] = []

    @property
    def scan(self) -> ScanStats:
        self._ensure_scanned()
        return self._scan

    @property
    def quarantine(self) -> list[Quarantined]:
        self._ensure_scanned()
        return self._quarantine

    @property
    def schema(self) -> pa.Schema:
        self._ensure_scanned()
        return self._schema

    def _ensure_scanned(self) -> None:
        if self._scan is None:
            self.run((), None, None, None)

    def run(
        self,
        filters: Filters,
        by: Sequence[str] | None,
        metrics: Mapping[str, str] | None,
        bucket: str | None,
    ) -> pd.DataFrame:
        # Until a first pass has seen the data, any name may be an extra column; the plan is
        # checked against the schema the tasks report, before anything is returned.
        columns = self._schema.names if self._schema else possible_columns(filters, by)
        plan = build_plan(columns, filters, by, metrics, bucket)
        if self._schema is not None:
            plan.check(self._schema)
        results = self._execute(plan)
        chunks = [self.chunks[r["chunk"]] for r in results]
        parsed = [r["parsed"] for r in results]
        if self._scan is None:
            self._quarantine = number_lines(chunks, parsed)
            self._scan = scan_stats(self.files, parsed, self._quarantine)
            self._schema = _union_schema([r["schema"] for r in results])
        plan.check(self._schema)
        return finalize(merge([r["partial"] for r in results], plan), plan)

    def _execute(self, plan: Plan) -> list[dict[str, Any]]:
        import ray.data

        items = [{"chunk": i, **_chunk_row(c)} for i, c in enumerate(self.chunks)]
        dataset = without_reservation(ray.data.from_items(items, override_num_blocks=len(items)))
        scanned = dataset.map_batches(
            scan_batch,
            fn_kwargs={
                "plan": plan,
                "prices": self.prices,
                "max_line_bytes": self.max_line_bytes,
                "columns": self.columns,
            },
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=1,
        )
        return [pickle.loads(row["payload"]) for row in scanned.iter_rows()]


def ray_chunk_bytes(files: list[LogFile]) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else os.cpu_count()
    return chunk_bytes_for(files, cpus or 1, RAY_CHUNK_BYTES)


def _chunk_row(chunk: Chunk) -> dict[str, Any]:
    return {**asdict(chunk.file), "index": chunk.index, "start": chunk.start, "end": chunk.end}


def scan_batch(
    batch: pa.Table,
    plan: Plan,
    prices: PriceTable,
    max_line_bytes: int,
    columns: Collection[str] | None = None,
) -> pa.Table:
    """Inside a Ray Data task: chunk descriptions in, one pickled partial per chunk out."""
    out = []
    for row in batch.to_pylist():
        file = LogFile(row["path"], row["uri"], row["size"])
        chunk = Chunk(file, row["index"], row["start"], row["end"])
        parsed = parse_chunk(chunk, max_line_bytes, columns)
        table = _with_missing(parsed.table, plan)
        result = {
            "chunk": row["chunk"],
            "partial": partial(table, plan, prices),
            # Rows stay in the task: the driver only needs counts and quarantined lines.
            "parsed": parsed.summary(),
            "schema": parsed.table.schema,
        }
        out.append(pickle.dumps(result, protocol=5))
    return pa.table({"payload": pa.array(out, pa.binary())})


def _with_missing(table: pa.Table, plan: Plan) -> pa.Table:
    """A column this chunk never saw is all null here (another chunk may have it); one
    dictionary per column, as group_by cannot mix them."""
    for name in sorted(plan.columns - set(table.column_names)):
        table = table.append_column(name, pa.nulls(table.num_rows))
    return table.unify_dictionaries()


def _union_schema(schemas: list[pa.Schema]) -> pa.Schema:
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # clashing extras: names matter here
        fields: dict[str, pa.Field] = {}
        for schema in schemas:
            for f in schema:
                fields.setdefault(f.name, f)
        return pa.schema(list(fields.values()))
