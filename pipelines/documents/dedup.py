"""Exact and near-duplicate removal on Ray.

Both steps shuffle compact key rows (a hash, an id; never the text) with Ray tasks
(shuffle.py), so each reduce task sees every row of its keys and no process holds every
hash or signature; only the ids to drop reach the driver. Ids are unique by then (ids.py),
so dropping an id drops one row, never every copy of a record. Kept rows are chosen by
smallest id, so the result does not depend on block order, worker count or retries. The hashes and
signatures are computed by annotate() inside the read stage, where the text already is.
"""

from __future__ import annotations

import itertools
import json
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.documents.config import ExactDedupConfig, MinHashConfig
from pipelines.documents.minhash import (
    Banding,
    band_keys,
    choose_banding,
    duplicates,
    jaccard_sorted,
    shingle_hashes,
    signatures,
)
from pipelines.documents.shuffle import hash_shuffle
from pipelines.documents.steps import DatasetStep, DocBatch, RunContext
from pipelines.documents.text import tokens_digest
from refinery.storage import write_text

if TYPE_CHECKING:
    from ray.data import Dataset


def first_per_key(table: pa.Table, key: str) -> pa.Array:
    """Mask of the rows with the smallest id of their key value."""
    if table.num_rows == 0:
        return pa.array([], pa.bool_())
    order = pc.sort_indices(table, [(key, "ascending"), ("id", "ascending")])
    keys = table[key].take(order).to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    mask = np.empty(len(keys), dtype=bool)
    mask[order.to_numpy()] = first
    return pa.array(mask)


# The columns the steps' annotate() adds to each kept document in the read stage.
HASH, BANDS, SHINGLES = "_hash", "_bands", "_shingles"
# Key rows of an empty block: the same schema as a full block's, so the reduce can concatenate.
_NO_CONTENT_KEYS = pa.schema(
    [("partition", pa.int64()), ("hash", pa.string()), ("id", pa.string())]
)
_NO_BAND_ROWS = pa.schema([("partition", pa.int64()), ("band", pa.uint64()), ("id", pa.string())])
_NO_SHINGLES = pa.schema([("id", pa.string()), (SHINGLES, pa.list_(pa.uint64()))])


def _content_keys(table: pa.Table, partitions: int) -> pa.Table:
    if table.num_rows == 0:  # an empty block may have lost its columns upstream
        return _NO_CONTENT_KEYS.empty_table()
    hashes = table[HASH].to_pylist()
    return pa.table(
        {
            "partition": pa.array([int(h[:8], 16) % partitions for h in hashes], pa.int64()),
            "hash": table[HASH],
            "id": table["id"],
        }
    )


def _later_ids(table: pa.Table) -> pa.Table:
    """Ids that share their hash with a smaller id: the exact duplicates to drop."""
    return table.filter(pc.invert(first_per_key(table, "hash"))).select(["id"])


def _id_mask(table: pa.Table, ids_ref: Any) -> pa.Array:
    """Rows whose id is in the set behind ids_ref (an ObjectRef: put once, shared by tasks)."""
    import ray

    ids = ray.get(ids_ref)
    return pc.is_in(table["id"], value_set=pa.array(sorted(ids), pa.string()))


def _drop_ids(table: pa.Table, dropped: Any, columns: list[str]) -> pa.Table:
    kept = table.filter(pc.invert(_id_mask(table, dropped)))
    return kept.drop_columns([c for c in columns if c in kept.column_names])


def drop_rows(ds: Dataset, ids: set[str], columns: list[str] | None = None) -> Dataset:
    """ds without the rows of `ids` (and without helper `columns`); lazy, so it fuses
    with the next step's map."""
    import ray

    if not ids and not columns:
        return ds
    kwargs = {"dropped": ray.put(ids), "columns": columns or []}
    return ds.map_batches(_drop_ids, fn_kwargs=kwargs, batch_format="pyarrow")


def _column_ids(tables: list[pa.Table], column: str) -> set[str]:
    return {x for t in tables for x in t[column].to_pylist()}


class ExactDedup(DatasetStep):
    name = "exact_dedup"

    def __init__(self, cfg: ExactDedupConfig) -> None:
        self.cfg = cfg

    def annotate(self, batch: DocBatch) -> dict[str, pa.Array]:
        return {HASH: pa.array(map(tokens_digest, batch.token_hashes), pa.string())}

    def apply(self, ds: Dataset, ctx: RunContext) -> Dataset:
        with ctx.stats.timed(self.name) as step:
            ds = ds.materialize()
            step.rows_in += ds.count()
            keys = partial(_content_keys, partitions=self.cfg.partitions)
            found = hash_shuffle(ds.to_arrow_refs(), keys, _later_ids, self.cfg.partitions)
            dropped = _column_ids(found, "id")
            step.rows_out += step.rows_in - len(dropped)
            step.dropped["duplicate"] += len(dropped)
        return drop_rows(ds, dropped, [HASH])


def signature_columns(
    tokens: list[np.ndarray], cfg: MinHashConfig, banding: Banding
) -> dict[str, pa.Array]:
    """Each document's band keys, and its shingle hashes (kept for the exact check)."""
    hashes = shingle_hashes(tokens, cfg.ngram)
    keys = band_keys(signatures(hashes, cfg.num_perm, cfg.seed), banding)
    bands = pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1)), banding.bands)
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in hashes])]).astype(np.int32)
    flat = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    shingles = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    return {BANDS: bands, SHINGLES: shingles}


def _band_rows(table: pa.Table, partitions: int) -> pa.Table:
    """One row per document and band: (band key, id), partitioned by key."""
    if table.num_rows == 0:  # Ray Data passes empty blocks by the UDF that adds _bands
        return _NO_BAND_ROWS.empty_table()
    bands = table[BANDS].combine_chunks()
    width = bands.type.list_size
    keys = bands.flatten().to_numpy()
    docs = np.repeat(np.arange(table.num_rows), width)
    return pa.table(
        {
            "partition": pa.array((keys % np.uint64(partitions)).astype(np.int64)),
            "band": pa.array(keys),
            "id": table["id"].take(pa.array(docs, pa.int64())),
        }
    )


def _bucket_pairs(table: pa.Table, max_pairs: int) -> pa.Table:
    """Candidate pairs from each bucket (rows sharing a band key): all pairs in small
    buckets; a huge bucket links each member to its smallest id, which keeps the same
    connected component without a quadratic pair list."""
    table = table.sort_by([("band", "ascending"), ("id", "ascending")])
    bands = table["band"].to_numpy()
    starts = np.flatnonzero(np.r_[True, bands[1:] != bands[:-1]])
    ends = np.r_[starts[1:], len(bands)]
    shared = ends - starts > 1  # most buckets hold one document: never visited in Python
    ids = table["id"].to_pylist()
    pairs: set[tuple[str, str]] = set()
    for start, end in zip(starts[shared], ends[shared], strict=True):
        members = sorted(set(ids[start:end]))
        if len(members) * (len(members) - 1) // 2 <= max_pairs:
            pairs.update(itertools.combinations(members, 2))
        else:
            pairs.update((members[0], m) for m in members[1:])
    left, right = zip(*sorted(pairs), strict=True) if pairs else ((), ())
    return pa.table({"a": pa.array(left, pa.string()), "b": pa.array(right, pa.string())})


def _pairs(table: pa.Table) -> list[tuple[str, str]]:
    return list(zip(table["a"].to_pylist(), table["b"].to_pylist(), strict=True))


def _shingles_of(table: pa.Table, wanted: Any) -> pa.Table:
    if table.num_rows == 0:
        return _NO_SHINGLES.empty_table()
    return table.filter(_id_mask(table, wanted)).select(["id", SHINGLES])


def _cluster_lines(clusters: dict[str, list[str]], pairs: set[tuple[str, str]]) -> str:
    """One JSON line per cluster: kept representative, members, the pairs that joined them."""
    by_root: dict[str, list[list[str]]] = {}
    member_root = {m: root for root, members in clusters.items() for m in members}
    for a, b in sorted(pairs):
        by_root.setdefault(member_root[a], []).append([a, b])
    return "".join(
        json.dumps({"representative": root, "members": members, "pairs": by_root.get(root, [])})
        + "\n"
        for root, members in sorted(clusters.items())
    )


class MinHashDedup(DatasetStep):
    name = "minhash_dedup"

    def __init__(self, cfg: MinHashConfig) -> None:
        self.cfg = cfg
        if cfg.bands and cfg.rows:
            self.banding = Banding(cfg.bands, cfg.rows, cfg.threshold)
        else:
            self.banding = choose_banding(cfg.threshold, cfg.num_perm)

    def annotate(self, batch: DocBatch) -> dict[str, pa.Array]:
        return signature_columns(batch.token_hashes, self.cfg, self.banding)

    def candidate_pairs(self, ds: Dataset) -> set[tuple[str, str]]:
        """Pairs sharing a band; only the pairs (not signatures) reach the driver."""
        keys = partial(_band_rows, partitions=self.cfg.partitions)
        reduce = partial(_bucket_pairs, max_pairs=self.cfg.max_bucket_pairs)
        found = hash_shuffle(ds.to_arrow_refs(), keys, reduce, self.cfg.partitions)
        return {pair for t in found for pair in _pairs(t)}

    def verify(self, ds: Dataset, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Pairs whose exact Jaccard reaches the threshold; shingles of candidates only."""
        import ray

        wanted = ray.put({x for pair in pairs for x in pair})
        found = ds.map_batches(_shingles_of, fn_kwargs={"wanted": wanted}, batch_format="pyarrow")
        sets = {}
        for batch in found.iter_batches(batch_format="pyarrow", batch_size=None):
            for doc_id, hashes in zip(batch["id"].to_pylist(), batch[SHINGLES], strict=True):
                sets[doc_id] = hashes.values.to_numpy()
        threshold = self.cfg.threshold
        return {(a, b) for a, b in pairs if jaccard_sorted(sets[a], sets[b]) >= threshold}

    def apply(self, ds: Dataset, ctx: RunContext) -> Dataset:
        with ctx.stats.timed(self.name) as step:
            ds = ds.materialize()
            step.rows_in += ds.count()
            pairs = self.candidate_pairs(ds)
            confirmed = self.verify(ds, pairs) if self.cfg.verify and pairs else pairs
            dropped, clusters = duplicates(confirmed)
            out = drop_rows(ds, dropped, [BANDS, SHINGLES]).materialize()
            step.rows_out += out.count()
            step.dropped["near_duplicate"] += len(dropped)
        write_text(f"{ctx.output}/near_duplicates.jsonl", _cluster_lines(clusters, confirmed))
        ctx.params["minhash"] = {
            **self.banding.report(),
            "num_perm": self.cfg.num_perm,
            "ngram": self.cfg.ngram,
            "verify": self.cfg.verify,
            "candidate_pairs": len(pairs),
            "confirmed_pairs": len(confirmed),
            "clusters": len(clusters),
        }
        return out
