"""An index snapshot as the document pipeline writes it (DIR/index/), loaded for serving.

The manifest (refinery/manifest.py) names the model, dimension, metric and the Parquet
documents, and is checked against the index file at load; the index file
holds the vectors by `index_id`; the documents give each id its payload (text, source, ...).
Search logic lives here, apart from Ray Serve, so it is testable without a cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from refinery.manifest import Manifest, SnapshotError
from refinery.storage import resolve
from refinery.update_log import Delete, Entry, Record, UpdateLog, Upsert
from serve.errors import SchemaMismatch
from serve.payload_rows import PayloadRows
from serve.protocol import HitDict, PayloadFilter

logger = logging.getLogger(__name__)


class Snapshot:
    """A loaded index plus payloads; `search` answers many queries with one index call.

    Real-time updates (`apply` of update-log entries, or `upsert` and `delete`) change the
    served copy; the snapshot on disk stays as the pipeline wrote it. `follow` and `catch_up`
    apply an update log (refinery/update_log.py) from the position the manifest says the
    snapshot includes, so every copy that follows one log ends in the same state. Readers never
    lock: an update publishes new rows before it points ids at them and touches the index
    last, so a concurrent search sees the old or the new state of an id, never a missing row;
    deleted ids never come back. An update costs what it changes (serve/payload_rows.py).
    """

    # Records applied as one update: each index write waits for the scan running to finish
    # (the index's reader/writer lock), so one write per record would let a copy under search
    # load apply only a few records per scan, however many were logged.
    APPLY_BATCH_ENTRIES = 1024

    def __init__(self, snapshot_dir: str) -> None:
        self.path = snapshot_dir
        self.manifest = Manifest.read(snapshot_dir)
        self.index = _load_index(self.manifest.index)
        self.manifest.check_index(self.index.d, self.index.metric)
        table = _load_payload_table(self.manifest.documents)
        # Payloads stay in Arrow; hits look up their rows, so loading builds no Python dicts.
        self.rows = PayloadRows(table)
        self._write_lock = threading.Lock()
        self._follow_lock = threading.Lock()
        self.log: UpdateLog | None = None
        self.position = self.manifest.update_log_position or 0  # the last log record applied
        unmatched = np.setdiff1d(self.index.ids(), table["index_id"].to_numpy())
        if len(unmatched):
            raise SnapshotError(
                f"{self.manifest.documents}: no document row for {len(unmatched)} index ids "
                f"(e.g. {unmatched[:3].tolist()}); index and documents are from different runs?"
            )
        del table  # self.rows holds the rows, in one chunk
        _return_free_memory()

    @property
    def row_of(self) -> dict[int, int]:
        return self.rows.state.row_of

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        payload_filter: PayloadFilter | None = None,
        threads: int | None = None,
    ) -> list[list[HitDict]]:
        """Per query, its hits as `{"id", "score", "payload"}` dicts: the JSON shape of a search
        answer, built without a model per hit, and cheap to pickle to the ingress. `threads`:
        this search's thread count (None: vectorindex's). An empty index has no hits."""
        allowed = self.allowed_ids(payload_filter) if payload_filter else None
        try:
            scores, ids = self.index.search(vectors, k, allowed_ids=allowed, threads=threads)
        except ValueError:
            # vectorindex refuses to search an empty index; every vector deleted is no error.
            if self.index.ntotal:
                raise
            return [[] for _ in range(len(vectors))]
        return self._hits(scores, ids)

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[HitDict]]:
        # Per query, its (score, id, payload row): an id of -1 fills a query with fewer than k
        # hits, and an id without a row was deleted since the index answered.
        hit_ids = ids.tolist()
        rows, state = self.rows.resolve([i for row_ids in hit_ids for i in row_ids])
        found, next_row = [], iter(rows)
        for row_scores, row_ids in zip(scores.tolist(), hit_ids, strict=True):
            found.append(
                [
                    (score, i, row)
                    for score, i in zip(row_scores, row_ids, strict=True)
                    if (row := next(next_row)) is not None and i >= 0
                ]
            )
        # One lookup for every query's payloads: per-call Arrow overhead is paid once per batch.
        wanted = [row for hits in found for _, _, row in hits]
        payloads = iter(state.payloads.take(pa.array(wanted, pa.int64())).to_pylist())
        return [
            [{"id": i, "score": s, "payload": next(payloads)} for s, i, _ in hits] for hits in found
        ]

    def allowed_ids(self, payload_filter: PayloadFilter) -> np.ndarray:
        state = self.rows.state
        known = state.payloads.column_names
        unknown = sorted(set(payload_filter) - set(known))
        if unknown:
            raise SchemaMismatch(
                f"unknown filter field(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        mask = pa.array(state.live)
        for field, wanted in payload_filter.items():
            column = state.table[field]
            values = _filter_values(field, column.type, wanted)
            mask = pc.and_(mask, pc.is_in(column, value_set=values))
        return state.table.filter(mask)["index_id"].to_numpy().astype(np.int64)

    def apply(self, entries: Sequence[Entry]) -> None:
        """Applies update-log entries in order, all or (SchemaMismatch) none; a run of upserts
        (or deletes) is one update. Applying an entry again leaves the same state."""
        runs = [(kind, list(run)) for kind, run in itertools.groupby(entries, type)]
        upserts = {}
        for n, (kind, batch) in enumerate(runs):
            if kind is Upsert:
                ids = np.array([entry.id for entry in batch], dtype=np.int64)
                upserts[n] = (ids, self._stacked(batch), [entry.payload for entry in batch])
                self.check_upsert(*upserts[n])
            elif kind is not Delete:
                raise TypeError(f"not an update entry: {kind.__name__}")
        for n, (_, batch) in enumerate(runs):
            if n in upserts:
                self.upsert(*upserts[n])
            else:
                self.delete(np.array([i for entry in batch for i in entry.ids], dtype=np.int64))

    def follow(self, log: UpdateLog) -> int:
        """Applies `log` after the position this snapshot includes, and keeps following it
        through `catch_up`. Returns the position reached."""
        self.log = log
        return self.catch_up()

    def catch_up(self) -> int:
        """Applies the records appended since the last one applied; returns its position.
        A record that does not fit this snapshot's columns is skipped by every copy alike."""
        if self.log is None:
            raise RuntimeError("catch_up needs a log: call follow(log) first")
        with self._follow_lock:
            records: list[Record] = []
            for record in self.log.read(after=self.position):
                records.append(record)
                if sum(len(r.entries) for r in records) >= self.APPLY_BATCH_ENTRIES:
                    self._apply_records(records)
                    records = []
            self._apply_records(records)
        return self.position

    def _apply_records(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self.apply([entry for record in records for entry in record.entries])
        except SchemaMismatch:
            # apply changed nothing: each record alone, so only the ones that do not fit go.
            for record in records:
                try:
                    self.apply(record.entries)
                except SchemaMismatch as error:
                    logger.warning(
                        "%s: record %d skipped: %s", self.log.location, record.position, error
                    )
        self.position = records[-1].position

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict]) -> None:
        """Add or replace vectors with their payloads (unknown payload fields are an error);
        an id given twice keeps its last vector and payload."""
        keep = _last_of_each(ids)
        ids, vectors = ids[keep], self._checked_vectors(ids, vectors)[keep]
        new_rows = self._payload_rows(ids, [payloads[k] for k in keep])
        with self._write_lock:
            self.rows.upsert(new_rows)
            # Replaces each id's vector in one step for readers; the mapped base stays as it
            # is (vectorindex/layered.py).
            self.index.upsert(vectors, ids)

    def delete(self, ids: np.ndarray) -> int:
        """Remove ids; unknown ones are ignored. Returns how many were removed."""
        with self._write_lock:
            present = [i for i in ids.tolist() if i in self.row_of]
            if not present:
                return 0
            self.index.remove_ids(np.asarray(present, dtype=np.int64))
            return len(self.rows.delete(present))

    def check_upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[dict]) -> None:
        """Raises SchemaMismatch where `upsert` would, changing nothing: an update is checked
        before it is logged, so the log holds only updates that every copy can apply."""
        self._checked_vectors(ids, vectors)
        self._payload_rows(ids, payloads)

    def _stacked(self, upserts: list[Upsert]) -> np.ndarray:
        wrong = [u.id for u in upserts if np.shape(u.vector) != (self.index.d,)]
        if wrong:
            raise SchemaMismatch(f"id {wrong[0]}: its vector is not of dimension {self.index.d}")
        return np.stack([u.vector for u in upserts])

    def _checked_vectors(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.index.d):
            raise SchemaMismatch(
                f"vectors of shape {vectors.shape} for {len(ids)} ids; "
                f"the index holds vectors of dimension {self.index.d}"
            )
        return vectors

    def _payload_rows(self, ids: np.ndarray, payloads: list[dict]) -> pa.Table:
        schema = self.rows.state.table.schema
        if not all(isinstance(p, dict) for p in payloads):
            raise SchemaMismatch("a payload is a JSON object of field values")
        known = [name for name in schema.names if name != "index_id"]
        unknown = sorted({key for p in payloads for key in p} - set(known))
        if unknown:
            raise SchemaMismatch(
                f"unknown payload field(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        records = [{**p, "index_id": i} for p, i in zip(payloads, ids.tolist(), strict=True)]
        try:
            return pa.Table.from_pylist(records, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            message = f"payload does not match the snapshot's columns: {error}"
            raise SchemaMismatch(message) from None


def _return_free_memory() -> None:
    """Loading frees the Parquet decode buffers and the id arrays it compared, but the
    allocators keep those pages for reuse: each replica on a node would hold its own idle
    copy, next to the index pages they share. Give them back to the system."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # malloc_trim is glibc's
        ctypes.CDLL(None).malloc_trim(0)


def _last_of_each(ids: np.ndarray) -> np.ndarray:
    """Positions of each id's last occurrence, in order."""
    _, from_end = np.unique(ids[::-1], return_index=True)
    return np.sort(len(ids) - 1 - from_end)


def _filter_values(field: str, column_type: pa.DataType, wanted: Any) -> pa.Array:
    """A filter's values as an array of the column's type; a value of another type is an error
    (Arrow would cast 1.5 to an int column as 1, and matching then means something else)."""
    values = wanted if isinstance(wanted, list) else [wanted]
    mismatched = [value for value in values if not _fits(value, column_type)]
    if not mismatched:
        try:
            return pa.array(values, type=column_type)
        except (pa.ArrowException, OverflowError):  # an integer past the column's range
            mismatched = values
    raise SchemaMismatch(
        f"filter field {field!r}: {mismatched[0]!r} does not fit the column's type {column_type}"
    )


def _fits(value: Any, column_type: pa.DataType) -> bool:
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
        return isinstance(value, str)
    if pa.types.is_boolean(column_type):
        return isinstance(value, bool)
    if isinstance(value, bool):  # a bool is an int to Python, not to a filter
        return False
    if pa.types.is_integer(column_type):
        return isinstance(value, int)
    if pa.types.is_floating(column_type):
        return isinstance(value, int | float)
    return False  # lists, structs, timestamps...: no filter value is one of them


def _load_index(uri: str) -> Any:
    """vectorindex reads local files, memory-mapped: the replicas on a node share one page-cache
    copy of a local index. Updates go to a delta in the replica's memory and only mark the
    mapped rows they replace or delete, so the mapping stays shared (vectorindex/layered.py).
    A remote index is copied down first; the mapping outlives the temporary file."""
    import vectorindex

    fs, inner = resolve(uri)
    if not fs.get_file_info(inner).is_file:
        raise SnapshotError(f"{uri}: index file not found")
    if isinstance(fs, pafs.LocalFileSystem):
        return vectorindex.LayeredIndex(vectorindex.load(inner, mmap=True))
    with tempfile.TemporaryDirectory(prefix="refinery-index-") as tmp:
        local = f"{tmp}/index.bin"
        pafs.copy_files(inner, local, source_filesystem=fs)
        return vectorindex.LayeredIndex(vectorindex.load(local, mmap=True))


def _load_payload_table(documents: str) -> pa.Table:
    """index_id plus every payload column (not the vectors: the index holds those)."""
    fs, inner = resolve(documents)
    dataset = pads.dataset(inner, filesystem=fs, format="parquet")
    names = [n for n in dataset.schema.names if n not in ("vector", "index_id")]
    return dataset.to_table(columns=["index_id", *names])
