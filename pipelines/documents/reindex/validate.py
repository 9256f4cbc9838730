"""Checks a reindexed version passes before anything is handed on (registry, rollout).

Each check reads what was written (the index file and the manifest as the Serve loader would),
not the in-memory rows: a version that cannot be loaded, or whose index disagrees with its
documents, fails here rather than in a replica.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipelines.documents.reindex.build import Assembled, Champion, Embedding
from pipelines.documents.reindex.config import ValidationConfig
from refinery.manifest import Manifest

# Exact scores within this of the k-th best count as ties: an index may return any of them.
TIE = 1e-4


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: not applicable to this version (said why in detail)
    value: float | None
    threshold: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.passed is False]


def metrics(checks: list[Check]) -> dict[str, float]:
    return {f"validation.{c.name}": c.value for c in checks if c.value is not None}


def validate(
    cfg: ValidationConfig,
    snapshot: str,
    assembled: Assembled,
    champion: Champion | None,
    embedding: Embedding,
    seed: int = 0,
) -> list[Check]:
    import vectorindex

    manifest = Manifest.read(snapshot)
    checks = [_embedder(manifest, embedding)]
    checks += _bounds(cfg, assembled, champion)
    if manifest.index is None or assembled.table.num_rows == 0:
        empty = "the version has no vectors"
        return [*checks, Check("recall", False, None, cfg.min_recall, empty)]
    index = vectorindex.load(manifest.index, mmap=True)
    rng = np.random.default_rng(seed)
    vectors = assembled.vectors
    ids = assembled.table["index_id"].to_numpy()
    sample = vectors[rng.choice(len(vectors), min(cfg.sample, len(vectors)), replace=False)]
    k = min(cfg.k, len(vectors))
    _, found = index.search(sample, k)
    checks.append(_recall(cfg, sample, found, vectors, ids, k))
    checks.append(_overlap(cfg, sample, found, champion, manifest, k))
    checks.append(_smoke(cfg, index, embedding, ids, k))
    return checks


def _embedder(manifest: Manifest, embedding: Embedding) -> Check:
    model, dim = embedding.cfg.model, embedding.model.get_embedding_dimension()
    ok = (manifest.model, manifest.dimension, manifest.metric) == (model, dim, "ip")
    detail = (
        f"manifest: {manifest.model!r}, {manifest.dimension} dims, {manifest.metric}; "
        f"embedder: {model!r}, {dim} dims, ip"
    )
    return Check("embedder", ok, None, None, detail)


def _bounds(cfg: ValidationConfig, assembled: Assembled, champion: Champion | None) -> list[Check]:
    if champion is None:
        none = "no champion to compare with"
        return [Check(f"{n}_change", None, None, None, none) for n in ("documents", "chunks")]
    pairs = {
        "documents": (champion.documents(), assembled.counts.documents),
        "chunks": (champion.manifest.count, assembled.counts.total),
    }
    checks = []
    for name, (before, after) in pairs.items():
        change = abs(after - before) / before if before else (0.0 if after == before else 1.0)
        checks.append(
            Check(
                f"{name}_change",
                change <= cfg.max_count_change,
                round(change, 6),
                cfg.max_count_change,
                f"{before} -> {after} {name}",
            )
        )
    return checks


def _recall(
    cfg: ValidationConfig,
    queries: np.ndarray,
    found: np.ndarray,
    vectors: np.ndarray,
    ids: np.ndarray,
    k: int,
) -> Check:
    """recall@k of the index's answers against exact inner products (numpy), ties counted."""
    exact = queries @ vectors.T
    kth = -np.partition(-exact, k - 1, axis=1)[:, k - 1]
    order = np.argsort(ids)
    where = np.clip(np.searchsorted(ids, found, sorter=order), 0, len(ids) - 1)
    rows = order[where]
    valid = (found >= 0) & (ids[rows] == found)
    scores = np.take_along_axis(exact, rows, axis=1)
    recall = float(np.mean(valid & (scores >= kth[:, None] - TIE)))
    detail = f"{len(queries)} of the version's own vectors as queries, exact search by numpy"
    return Check(f"recall_at_{cfg.k}", recall >= cfg.min_recall, round(recall, 6),
                 cfg.min_recall, detail)  # fmt: skip


def _overlap(
    cfg: ValidationConfig,
    queries: np.ndarray,
    found: np.ndarray,
    champion: Champion | None,
    manifest: Manifest,
    k: int,
) -> Check:
    name = f"overlap_at_{cfg.k}"
    if champion is None or champion.manifest.index is None:
        return Check(name, None, None, cfg.min_overlap, "no champion to compare with")
    if (champion.manifest.model, champion.manifest.dimension) != (
        manifest.model,
        manifest.dimension,
    ):
        return Check(name, None, None, cfg.min_overlap,
                     "the champion's vectors come from another model")  # fmt: skip
    import vectorindex

    old = vectorindex.load(champion.manifest.index, mmap=True)
    _, before = old.search(queries, k)
    shared = [
        len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / k
        for a, b in zip(found, before, strict=True)
    ]
    overlap = float(np.mean(shared))
    return Check(name, overlap >= cfg.min_overlap, round(overlap, 6), cfg.min_overlap,
                 f"{len(queries)} queries against the champion's index")  # fmt: skip


def _smoke(cfg: ValidationConfig, index: Any, embedding: Embedding, ids: np.ndarray,
           k: int) -> Check:  # fmt: skip
    if not cfg.smoke_queries:
        return Check("smoke", None, None, None, "no smoke queries configured")
    vectors = embedding.texts(cfg.smoke_queries)
    _, found = index.search(vectors, k)
    known = np.isin(found, ids)
    hits = known.sum(axis=1)
    weakest = int(hits.min())
    detail = ", ".join(f"{q!r}: {n}" for q, n in zip(cfg.smoke_queries, hits.tolist(),
                                                       strict=True))  # fmt: skip
    return Check("smoke", weakest >= cfg.smoke_min_hits, float(weakest), float(cfg.smoke_min_hits),
                 f"hits with a document row per query: {detail}")  # fmt: skip
