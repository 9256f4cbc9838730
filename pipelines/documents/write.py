"""Write: Parquet under DIR/documents/, the index snapshot and manifest under DIR/index/,
and the Qdrant upsert when configured.

A run writes a new version beside the served one (DIR/documents/VERSION/,
DIR/index/VERSION/index.bin and its manifest) and publishes it by replacing
DIR/index/manifest.json, which names the version's files, in one atomic write. A run that
fails or is interrupted before that leaves the published snapshot whole: never new documents
with an old index. Other versions are removed once the new one is published.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.documents import qdrant
from pipelines.documents.config import WriteConfig
from pipelines.documents.steps import RunContext
from refinery.manifest import MANIFEST_FILE, Manifest
from refinery.qdrant import connect
from refinery.storage import resolve

if TYPE_CHECKING:
    from ray.data import Dataset


def index_id(chunk_id: str) -> int:
    """A stable non-negative int64 for the index (it stores integer ids)."""
    return int.from_bytes(hashlib.blake2b(chunk_id.encode(), digest_size=8).digest(), "little") >> 1


def _add_index_id(table: pa.Table) -> pa.Table:
    ids = [index_id(x) for x in table["id"].to_pylist()]
    return table.append_column("index_id", pa.array(ids, pa.int64()))


def new_version() -> str:
    """Sorts by time; the random part keeps two runs in one second apart."""
    return f"v{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def remove_other_versions(folder: str, version: str) -> None:
    """Everything in `folder` but `version` and the published manifest: older versions, runs
    that never published, files of the unversioned layout."""
    fs, inner = resolve(folder)
    for entry in fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True)):
        name = entry.path.rsplit("/", 1)[-1]
        if name in (version, MANIFEST_FILE):
            continue
        if entry.type == pafs.FileType.Directory:
            fs.delete_dir(entry.path)
        else:
            fs.delete_file(entry.path)


class Fingerprint:
    """Order-independent corpus fingerprint: sha256 over the sorted (id, text hash) lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, table: pa.Table) -> None:
        for chunk_id, text in zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True):
            # A row upserted through the API may carry no text (or id) in its payload.
            self.lines.append(f"{chunk_id}\t{hashlib.blake2b((text or '').encode()).hexdigest()}")

    def hexdigest(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.lines)).encode()).hexdigest()


class IndexWriter:
    """vectorindex.IndexFlatIP filled batch by batch, saved under DIR/index/VERSION/."""

    def __init__(self, dim: int) -> None:
        import vectorindex

        self.index = vectorindex.IndexFlatIP(dim)

    def add(self, table: pa.Table) -> None:
        # The fixed-size list column flattens to one buffer: no Python list per vector.
        column = table["vector"].combine_chunks()
        vectors = column.flatten().to_numpy().astype(np.float32, copy=False)
        self.index.add_with_ids(
            vectors.reshape(len(column), self.index.d), table["index_id"].to_numpy()
        )

    def save(self, path: str) -> None:
        fs, inner = resolve(path)
        if isinstance(fs, pafs.LocalFileSystem):
            Path(inner).parent.mkdir(parents=True, exist_ok=True)
            self.index.save(inner)
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "index"
            self.index.save(str(local))
            pafs.copy_files(str(local), inner, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)  # fmt: skip


class SnapshotWriter:
    """One new version of a snapshot under `out`: the caller writes the documents' Parquet
    into `documents` and passes each batch to `add` (fingerprint, index); `publish` writes
    the index and the manifest and switches DIR/index/manifest.json to this version."""

    def __init__(self, out: str, dimension: int | None, model: str | None, metric: str,
                 with_index: bool = True, version: str | None = None) -> None:  # fmt: skip
        self.out = out.rstrip("/")
        self.version = version or new_version()
        self.documents = f"{self.out}/documents/{self.version}"
        self.dimension = dimension
        self.model = model if dimension is not None else None
        self.metric = metric
        self.index = IndexWriter(dimension) if dimension is not None and with_index else None
        self.fingerprint = Fingerprint()

    def add(self, table: pa.Table) -> None:
        self.fingerprint.add(table)
        if self.index is not None:
            self.index.add(table)

    @property
    def index_path(self) -> str | None:
        return f"{self.out}/index/{self.version}/index.bin" if self.index is not None else None

    def publish(self, count: int, update_log_position: int | None = None) -> str:
        """The published manifest's path; other versions are removed after the switch.
        `update_log_position`: the last update-log record folded into this version."""
        if self.index is not None:
            self.index.save(self.index_path)
        snapshot = Manifest(
            model=self.model,
            dimension=self.dimension,
            metric=self.metric,
            count=count,
            corpus_fingerprint=self.fingerprint.hexdigest(),
            created_at=datetime.now(UTC).isoformat(),
            index=self.index_path,
            documents=self.documents,
            version=self.version,
            update_log_position=update_log_position,
        )
        snapshot.write(f"{self.out}/index/{self.version}")  # the version's own record
        manifest = snapshot.write(f"{self.out}/index")  # published: the one atomic switch
        remove_other_versions(f"{self.out}/documents", self.version)
        remove_other_versions(f"{self.out}/index", self.version)
        return manifest


def write_snapshot(out: str, documents: pa.Table, vectors: np.ndarray,
                   model: str | None = None, metric: str = "ip") -> str:  # fmt: skip
    """A snapshot of `documents` (`id`, `text`, payload columns; `index_id` derived from `id`
    unless given) and their vectors, one row each, published under `out` by the writer the
    documents job uses; returns the snapshot directory (OUT/index) the Serve loader takes."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    table = documents.append_column("vector", column)
    if "index_id" not in table.column_names:
        table = _add_index_id(table)
    writer = SnapshotWriter(out, vectors.shape[1], model, metric)
    fs, inner = resolve(writer.documents)
    fs.create_dir(inner, recursive=True)
    pq.write_table(table, f"{inner}/part-0.parquet", filesystem=fs)
    writer.add(table)
    writer.publish(len(table))
    return f"{writer.out}/index"


def write_outputs(ds: Dataset, cfg: WriteConfig, ctx: RunContext) -> dict[str, Any]:
    """Write everything; returns the output paths and the manifest."""
    out = ctx.output.rstrip("/")
    with ctx.stats.timed("write") as step:
        rows = ds.map_batches(_add_index_id, batch_format="pyarrow").materialize()
        step.rows_in += rows.count()
        has_vectors = "vector" in rows.schema().names
        dim = _dimension(rows) if has_vectors else None
        model = ctx.runtime.embedding.model
        writer = SnapshotWriter(out, dim, model, cfg.metric, with_index=cfg.index)
        rows.write_parquet(writer.documents)
        client = None
        if has_vectors and ctx.runtime.qdrant.enabled:
            client = connect(ctx.runtime.qdrant, ctx.runtime.storage.root)
            qdrant.ensure_collection(client, ctx.runtime.qdrant.collection, dim)
        upserted = 0
        try:
            for table in rows.iter_batches(batch_format="pyarrow", batch_size=4096):
                writer.add(table)
                if client is not None:
                    upserted += qdrant.upsert(
                        client, ctx.runtime.qdrant.collection, [table],
                        cfg.qdrant_batch_size, cfg.qdrant_retries,
                    )  # fmt: skip
        finally:
            if client is not None:
                client.close()
        step.rows_out += step.rows_in
        manifest = writer.publish(step.rows_in)
    return {
        "documents": f"{out}/documents",
        "manifest": manifest,
        "index": writer.index_path,
        "qdrant": {"collection": ctx.runtime.qdrant.collection, "points": upserted}
        if client is not None
        else None,
        "quarantine": f"{out}/quarantine.jsonl",
        "dropped": f"{out}/dropped.jsonl",
    }


def _dimension(ds: Dataset) -> int:
    vector_type = ds.schema().base_schema.field("vector").type
    return vector_type.list_size
