"""Building the next index version from the corpus and the champion it replaces.

The corpus goes through the document pipeline's steps up to the embed step, unchanged. Then,
against the champion's documents Parquet (which stores every chunk's vector):

- a chunk whose id and text hash are the champion's keeps the champion's vector;
- a new chunk, or one whose text changed, is embedded;
- a champion chunk the corpus no longer yields (its document deleted or rewritten) is gone.

This is LangChain's indexing record manager or LlamaIndex's docstore, with the champion's own
Parquet as the record: nothing else has to be kept in step with the index. A full run (asked
for, or forced because the champion's vectors come from another model) embeds every chunk.

The diff runs in the job's process on Arrow columns, after the Ray Data steps: the writer reads
every row there anyway (index, fingerprint). Embedding, the costly part, runs on the embed
step's actor pool, or here when only a few chunks changed (starting a pool costs more).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipelines.documents.config import EmbedConfig
from pipelines.documents.embed import Embed, cluster_cpus, embed_resources, vector_column
from pipelines.documents.reindex.fold import Folded, Governed, LogState
from pipelines.documents.steps import RunContext
from pipelines.documents.write import SnapshotWriter, index_id
from refinery.config import EmbeddingConfig
from refinery.manifest import Manifest
from refinery.storage import resolve
from refinery.update_log import Upsert

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def content_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def vectors_of(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed-size list column as float32 [n, dim], without a Python list per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), dim)


@dataclass
class Champion:
    """The version serving now: its snapshot, its documents with their vectors, and the ids it
    took from the update log (whose rows are not corpus chunks)."""

    snapshot: str
    manifest: Manifest
    registry_version: str | None
    table: pa.Table
    state: LogState

    @classmethod
    def load(cls, snapshot: str, registry_version: str | None = None) -> Champion:
        manifest = Manifest.read(snapshot)
        fs, inner = resolve(manifest.documents)
        table = pads.dataset(inner, filesystem=fs, format="parquet").to_table()
        folder = manifest.index.rsplit("/", 1)[0] if manifest.index else snapshot
        return cls(snapshot, manifest, registry_version, table, LogState.read(folder))

    @property
    def vectors(self) -> np.ndarray:
        return vectors_of(self.table["vector"], int(self.manifest.dimension or 0))

    def corpus_rows(self) -> tuple[pa.Table, np.ndarray]:
        """(id, text hash) of its chunks that came from the corpus, and their vectors."""
        governed = pa.array(sorted(self.state.ids), pa.int64())
        keep = pc.invert(pc.is_in(self.table["index_id"], value_set=governed))
        rows = self.table.filter(keep)
        hashes = pa.array([content_hash(t) for t in rows["text"].to_pylist()], pa.string())
        known = pa.table({"id": rows["id"], "hash": hashes})
        return known, vectors_of(rows["vector"], int(self.manifest.dimension or 0))

    def documents(self) -> int:
        return _documents(self.table)


def _documents(table: pa.Table) -> int:
    if "doc_id" not in table.column_names:
        return table.num_rows
    return pc.count_distinct(table["doc_id"]).as_py()


@dataclass
class Counts:
    chunks: int = 0  # corpus chunks the pipeline yielded
    reused: int = 0
    embedded: int = 0  # corpus chunks without a reused vector, and log rows embedded again
    new: int = 0  # chunk ids the champion did not have
    changed: int = 0  # chunk ids the champion had with another text
    deleted: int = 0  # champion corpus chunks that are gone
    log_rows: int = 0  # rows that follow the update log
    documents: int = 0
    total: int = 0  # rows written

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Assembled:
    """The new version's rows (no vector column) and their vectors, one row each."""

    table: pa.Table
    vectors: np.ndarray
    counts: Counts = field(default_factory=Counts)


def with_index_ids(chunks: pa.Table) -> tuple[pa.Table, list[str | None]]:
    ids = [index_id(x) for x in chunks["id"].to_pylist()]
    hashes = [content_hash(t) for t in chunks["text"].to_pylist()]
    return chunks.append_column("index_id", pa.array(ids, pa.int64())), hashes


def corpus_hash_lookup(chunks: pa.Table, hashes: list[str | None]) -> dict[int, str | None]:
    return dict(zip(chunks["index_id"].to_pylist(), hashes, strict=True))


class Embedding:
    """Vectors for rows that have none: in this process by a model loaded once (validation
    embeds its smoke queries with it too), or on the embed step's actor pool for many."""

    def __init__(self, cfg: EmbeddingConfig, step: EmbedConfig, in_driver_max: int) -> None:
        if step.batch_size:
            cfg = cfg.model_copy(update={"batch_size": step.batch_size})
        self.cfg = cfg
        self.step = step
        self.in_driver_max = in_driver_max
        self._model: SentenceTransformer | None = None

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            from refinery.embedding import load_embedder

            self._model = load_embedder(self.cfg)
        return self._model

    def texts(self, texts: list[str]) -> np.ndarray:
        from refinery.embedding import encode_texts

        return encode_texts(self.model, texts, self.cfg)

    def rows(self, table: pa.Table, ctx: RunContext) -> pa.Table:
        """`table` with a `vector` column (rows may come back in another order)."""
        if table.num_rows <= self.in_driver_max:
            with ctx.stats.timed("embed") as step:
                step.rows_in += table.num_rows
                vectors = self.texts(table["text"].to_pylist())
                step.rows_out += table.num_rows
            return table.append_column("vector", vector_column(vectors))
        import ray

        # Several blocks per actor: one block would keep the pool's other actors idle.
        actors, _ = embed_resources(self.step, *cluster_cpus(), self.cfg.device)
        pieces = max(actors * 4, 1)
        size = max(math.ceil(table.num_rows / pieces), self.cfg.batch_size)
        slices = [table.slice(start, size) for start in range(0, table.num_rows, size)]
        out = Embed(self.step).apply(ray.data.from_arrow(slices), ctx)
        return pa.concat_tables(ray.get(out.to_arrow_refs()), promote_options="default")


def assemble(
    chunks: pa.Table,
    hashes: list[str | None],
    champion: Champion | None,
    reuse: bool,
    folded: Folded,
    embedding: Embedding,
    ctx: RunContext,
) -> Assembled:
    """The new version's rows: the corpus chunks that follow the corpus (reused vectors or
    embedded), then the rows that follow the log (its upserts, and those carried over from
    the champion); `reuse` False embeds every corpus chunk."""
    counts = Counts(chunks=chunks.num_rows)
    governed = pa.array(sorted(folded.state.ids), pa.int64())
    survive = pc.invert(pc.is_in(chunks["index_id"], value_set=governed)).to_numpy(
        zero_copy_only=False
    )
    corpus = chunks.filter(pa.array(survive))
    corpus_hashes = pa.array([h for h, s in zip(hashes, survive, strict=True) if s], pa.string())
    dim = _dimension(champion, embedding)

    parts: list[tuple[pa.Table, np.ndarray]] = []
    to_embed: list[pa.Table] = []
    if champion is None:
        to_embed.append(corpus)
        counts.new = corpus.num_rows
    else:
        with ctx.stats.timed("diff") as step:
            step.rows_in += corpus.num_rows
            known, known_vectors = champion.corpus_rows()
            position = pc.index_in(corpus["id"], value_set=known["id"])
            matched = pc.is_valid(position)
            same = pc.fill_null(
                pc.and_(matched, pc.equal(pc.take(known["hash"], position), corpus_hashes)),
                False,
            )
            unchanged = pc.sum(same).as_py() or 0
            counts.changed = (pc.sum(matched).as_py() or 0) - unchanged
            counts.new = corpus.num_rows - unchanged - counts.changed
            if not reuse:
                same = pa.array(np.zeros(corpus.num_rows, dtype=bool))
            rows = pc.filter(position, same).to_numpy(zero_copy_only=False)
            parts.append((corpus.filter(same), known_vectors[rows]))
            to_embed.append(corpus.filter(pc.invert(same)))
            counts.reused = len(rows)
            kept = pc.is_in(known["id"], value_set=corpus["id"])
            counts.deleted = known.num_rows - (pc.sum(kept).as_py() or 0)
            step.rows_out += counts.reused

    log_table, log_vectors, unembedded = _log_rows(corpus.schema, champion, folded, dim)
    if log_vectors is not None:
        parts.append((log_table, log_vectors))
    else:
        to_embed.append(unembedded)
    counts.log_rows = log_table.num_rows if log_vectors is not None else unembedded.num_rows

    pending = pa.concat_tables(to_embed)
    counts.embedded = pending.num_rows
    if pending.num_rows:
        embedded = embedding.rows(pending, ctx)
        vectors = vectors_of(embedded["vector"], embedded.schema.field("vector").type.list_size)
        parts.append((_conform(embedded, corpus.schema), vectors))
    tables = [t for t, _ in parts]
    table = pa.concat_tables(tables) if tables else corpus.schema.empty_table()
    width = dim or (parts[0][1].shape[1] if parts else 0)
    vectors = np.concatenate([v for _, v in parts]) if parts else np.zeros((0, width), np.float32)
    counts.total = table.num_rows
    counts.documents = _documents(table)
    return Assembled(table, vectors.astype(np.float32, copy=False), counts)


def _dimension(champion: Champion | None, embedding: Embedding) -> int | None:
    """The champion's width where its vectors are the configured model's, else unknown yet."""
    if champion is not None and champion.manifest.model == embedding.cfg.model:
        return champion.manifest.dimension
    return None


def _log_rows(
    schema: pa.Schema, champion: Champion | None, folded: Folded, dim: int | None
) -> tuple[pa.Table, np.ndarray | None, pa.Table]:
    """The rows that follow the log, in `schema`: (rows, their vectors, rows to embed). With
    the champion's model (`dim` known) the logged vectors are kept; with another model the
    rows are embedded again from their text, and one without text is dropped. An upsert that
    cannot be kept becomes a delete, so no older corpus chunk comes back in its place."""
    wanted = sorted(folded.state.upserted())
    fresh = [folded.upserts[i] for i in wanted if i in folded.upserts]
    carried_ids = [i for i in wanted if i not in folded.upserts]
    tables, vectors = [], []
    dropped: list[int] = []

    if fresh:
        table, kept = _payload_rows(schema, fresh)
        dropped += [u.id for u in fresh if u.id not in set(kept)]
        by_id = {u.id: u for u in fresh}
        tables.append(table)
        vectors += [np.asarray(by_id[i].vector, np.float32) for i in kept]
    if carried_ids and champion is not None:
        old = champion.table
        take = pc.is_in(old["index_id"], value_set=pa.array(carried_ids, pa.int64()))
        rows = old.filter(take)
        tables.append(_conform(rows, schema))
        if "vector" in rows.column_names:
            vectors += list(vectors_of(rows["vector"], rows.schema.field("vector").type.list_size))
        found = set(rows["index_id"].to_pylist())
        dropped += [i for i in carried_ids if i not in found]
    elif carried_ids:
        dropped += carried_ids

    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if dim is None:
        has_text = pc.is_valid(table["text"]) if table.num_rows else pa.array([], pa.bool_())
        dropped += pc.filter(table["index_id"], pc.invert(has_text)).to_pylist()
        _as_deletes(folded, dropped)
        return schema.empty_table(), None, table.filter(has_text)
    good = [v.shape == (dim,) for v in vectors]
    dropped += [i for i, ok in zip(table["index_id"].to_pylist(), good, strict=True) if not ok]
    table = table.filter(pa.array(good, pa.bool_()))
    stacked = (
        np.stack([v for v, ok in zip(vectors, good, strict=True) if ok])
        if any(good)
        else (np.zeros((0, dim), np.float32))
    )
    _as_deletes(folded, dropped)
    return table, stacked, schema.empty_table()


def _as_deletes(folded: Folded, ids: list[int]) -> None:
    for i in ids:
        log.warning("update-log upsert of id %d does not fit the new version: dropped", i)
        folded.state.ids[i] = Governed("delete", folded.state.ids[i].corpus_hash)
    folded.skipped += len(ids)


def _payload_rows(schema: pa.Schema, upserts: list[Upsert]) -> tuple[pa.Table, list[int]]:
    """Logged payloads as rows of `schema` (a field a payload lacks is null); a payload with
    a field the version has no column for, or a value that does not fit its column, is left
    out. Returns the rows and their ids, in order."""
    names = set(schema.names) - {"index_id"}

    def record(u: Upsert) -> dict[str, Any]:
        return {**u.payload, "index_id": u.id}

    fitting = [u for u in upserts if isinstance(u.payload, dict) and set(u.payload) <= names]
    try:
        return pa.Table.from_pylist([record(u) for u in fitting], schema=schema), [
            u.id for u in fitting
        ]
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    rows, ids = [], []
    for u in fitting:  # one at a time: only the ones that do not fit go
        try:
            rows.append(pa.Table.from_pylist([record(u)], schema=schema))
            ids.append(u.id)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            continue
    return (pa.concat_tables(rows) if rows else schema.empty_table()), ids


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table`'s columns in `schema` (by name; a missing one null)."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(pc.cast(table[f.name], f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_version(
    out: str, version: str, table: pa.Table, model: str, state: LogState, position: int | None
) -> tuple[str, str]:
    """The version's rows (with their vectors) as a snapshot of its own under OUT (OUT/index
    is its snapshot directory), with the ids that follow the log beside its index; returns
    (snapshot dir, index path)."""
    writer = SnapshotWriter(out, table.schema.field("vector").type.list_size, model, "ip",
                            version=version)  # fmt: skip
    fs, inner = resolve(writer.documents)
    fs.create_dir(inner, recursive=True)
    pq.write_table(table, f"{inner}/part-0.parquet", filesystem=fs)
    writer.add(table)
    state.write(f"{writer.out}/index/{version}")
    writer.publish(table.num_rows, update_log_position=position)
    return f"{writer.out}/index", str(writer.index_path)
