"""Exact and near-duplicate removal on Ray Data.

Both shuffle by a hash key (Ray Data's hash repartition puts every row of one key in one
block), so each task sees all rows of its keys and no process holds every hash or signature.
Kept rows are chosen by smallest id, so the result does not depend on block order, worker
count or retries.
"""

from __future__ import annotations

import itertools
import json
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
    signatures,
)
from pipelines.documents.steps import DatasetStep, RunContext
from pipelines.documents.text import content_hash, jaccard, shingles
from refinery.storage import write_text

if TYPE_CHECKING:
    from ray.data import Dataset


def first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Rows with the smallest id of each key value (the whole block is one partition)."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([(key, "ascending"), ("id", "ascending")])
    keys = table[key].to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return table.filter(pa.array(first))


def _add_hash(table: pa.Table) -> pa.Table:
    hashes = [content_hash(t) for t in table["text"].to_pylist()]
    return table.append_column("_hash", pa.array(hashes, pa.string()))


def _keep_first(table: pa.Table) -> pa.Table:
    return first_per_key(table, "_hash").drop_columns(["_hash"])


class ExactDedup(DatasetStep):
    name = "exact_dedup"

    def __init__(self, cfg: ExactDedupConfig) -> None:
        self.cfg = cfg

    def apply(self, ds: Dataset, ctx: RunContext) -> Dataset:
        with ctx.stats.timed(self.name) as step:
            step.rows_in += ds.count()
            out = (
                ds.map_batches(_add_hash, batch_format="pyarrow")
                .repartition(self.cfg.partitions, keys=["_hash"])
                .map_batches(_keep_first, batch_format="pyarrow", batch_size=None)
                .materialize()
            )
            step.rows_out += out.count()
            step.dropped["duplicate"] += step.rows_in - step.rows_out
        return out


def _band_rows(table: pa.Table, cfg: MinHashConfig, banding: Banding) -> pa.Table:
    sigs = signatures(table["text"].to_pylist(), cfg.ngram, cfg.num_perm, cfg.seed)
    ids, keys = [], []
    for doc_id, sig in zip(table["id"].to_pylist(), sigs, strict=True):
        ids.extend([doc_id] * banding.bands)
        keys.extend(band_keys(sig, banding))
    return pa.table({"band": pa.array(keys, pa.int64()), "id": pa.array(ids, pa.string())})


def _bucket_pairs(table: pa.Table, max_pairs: int) -> pa.Table:
    """Candidate pairs from each bucket (rows sharing a band key): all pairs in small
    buckets; a huge bucket links each member to its smallest id, which keeps the same
    connected component without a quadratic pair list."""
    left: list[str] = []
    right: list[str] = []
    table = table.sort_by([("band", "ascending"), ("id", "ascending")])
    bands = table["band"].to_numpy()
    ids = table["id"].to_pylist()
    starts = np.flatnonzero(np.r_[True, bands[1:] != bands[:-1]])
    ends = np.r_[starts[1:], len(bands)]
    for start, end in zip(starts, ends, strict=True):
        members = sorted(set(ids[start:end]))
        if len(members) < 2:
            continue
        if len(members) * (len(members) - 1) // 2 <= max_pairs:
            pairs = list(itertools.combinations(members, 2))
        else:
            pairs = [(members[0], m) for m in members[1:]]
        left.extend(a for a, _ in pairs)
        right.extend(b for _, b in pairs)
    return pa.table({"a": pa.array(left, pa.string()), "b": pa.array(right, pa.string())})


def _id_mask(table: pa.Table, ids_ref: Any) -> pa.Array:
    """Rows whose id is in the set behind ids_ref (an ObjectRef: put once, shared by tasks)."""
    import ray

    ids = ray.get(ids_ref)
    return pc.is_in(table["id"], value_set=pa.array(sorted(ids), pa.string()))


def _shingles_of(table: pa.Table, wanted: Any, ngram: int) -> pa.Table:
    mask = _id_mask(table, wanted)
    picked = table.filter(mask)
    sets = [sorted(shingles(t, ngram)) for t in picked["text"].to_pylist()]
    return pa.table({"id": picked["id"], "shingles": pa.array(sets, pa.list_(pa.binary()))})


def _drop_ids(table: pa.Table, dropped: Any) -> pa.Table:
    return table.filter(pc.invert(_id_mask(table, dropped)))


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

    def candidate_pairs(self, ds: Dataset) -> set[tuple[str, str]]:
        """Pairs sharing a band; only the pairs (not signatures) reach the driver."""
        pairs = (
            ds.map_batches(
                _band_rows,
                fn_kwargs={"cfg": self.cfg, "banding": self.banding},
                batch_format="pyarrow",
            )
            .repartition(self.cfg.partitions, keys=["band"])
            .map_batches(
                _bucket_pairs,
                fn_kwargs={"max_pairs": self.cfg.max_bucket_pairs},
                batch_format="pyarrow",
                batch_size=None,
            )
        )
        return {(row["a"], row["b"]) for row in pairs.iter_rows()}

    def verify(self, ds: Dataset, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Pairs whose exact Jaccard reaches the threshold; shingles of candidates only."""
        import ray

        wanted = ray.put({x for pair in pairs for x in pair})
        found = ds.map_batches(
            _shingles_of,
            fn_kwargs={"wanted": wanted, "ngram": self.cfg.ngram},
            batch_format="pyarrow",
        )
        sets = {row["id"]: set(row["shingles"]) for row in found.iter_rows()}
        return {(a, b) for a, b in pairs if jaccard(sets[a], sets[b]) >= self.cfg.threshold}

    def apply(self, ds: Dataset, ctx: RunContext) -> Dataset:
        import ray

        with ctx.stats.timed(self.name) as step:
            step.rows_in += ds.count()
            pairs = self.candidate_pairs(ds)
            confirmed = self.verify(ds, pairs) if self.cfg.verify and pairs else pairs
            dropped, clusters = duplicates(confirmed)
            out = ds
            if dropped:
                out = ds.map_batches(
                    _drop_ids, fn_kwargs={"dropped": ray.put(dropped)}, batch_format="pyarrow"
                ).materialize()
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
