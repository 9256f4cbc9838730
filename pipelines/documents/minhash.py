"""MinHash LSH pieces (no Ray): band choice, band keys from signatures, union-find."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

from pipelines.documents.text import shingles


def p_candidate(s: float, bands: int, rows: int) -> float:
    """Probability that a pair of Jaccard similarity s shares at least one band."""
    return 1.0 - (1.0 - s**rows) ** bands


@dataclass(frozen=True)
class Banding:
    bands: int
    rows: int
    threshold: float

    @property
    def effective_threshold(self) -> float:
        """The similarity where the S-curve is steepest, about (1/b)^(1/r)."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

    @property
    def p_at_threshold(self) -> float:
        return p_candidate(self.threshold, self.bands, self.rows)

    def report(self) -> dict[str, float]:
        return {
            "bands": self.bands,
            "rows": self.rows,
            "threshold": self.threshold,
            "effective_threshold": round(self.effective_threshold, 4),
            "p_candidate_at_threshold": round(self.p_at_threshold, 4),
        }


def choose_banding(threshold: float, num_perm: int, min_recall: float = 0.9) -> Banding:
    """The most selective bands x rows (most rows) whose P(candidate) at the threshold is at
    least min_recall; datasketch's own optimiser weighs false negatives lightly and gives
    9x13 at 0.8, which finds a pair at exactly 0.8 only ~40% of the time."""
    best = Banding(num_perm, 1, threshold)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if bands >= 1 and p_candidate(threshold, bands, rows) >= min_recall:
            best = Banding(bands, rows, threshold)
    return best


def signatures(texts: list[str], ngram: int, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures, one row per text (uint32 [n, num_perm])."""
    sets = [sorted(shingles(t, ngram)) for t in texts]
    hashes = MinHash.bulk(sets, num_perm=num_perm, seed=seed)
    return np.stack([h.hashvalues for h in hashes]) if hashes else np.empty((0, num_perm))


def band_keys(signature: np.ndarray, banding: Banding) -> list[int]:
    """One 63-bit key per band: band number and the band's hash values, hashed together."""
    keys = []
    for band in range(banding.bands):
        part = signature[band * banding.rows : (band + 1) * banding.rows]
        digest = hashlib.blake2b(band.to_bytes(4, "little") + part.tobytes(), digest_size=8)
        keys.append(int.from_bytes(digest.digest(), "little") >> 1)
    return keys


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller id becomes the root, so each root is its cluster's smallest id.
            self.parent[max(ra, rb)] = min(ra, rb)

    def clusters(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for x in list(self.parent):
            groups.setdefault(self.find(x), []).append(x)
        return {root: sorted(set(members) | {root}) for root, members in groups.items()}


def duplicates(pairs: Iterable[tuple[str, str]]) -> tuple[set[str], dict[str, list[str]]]:
    """Connected components of the pairs: ids to drop (all but each cluster's smallest id)
    and the clusters by representative."""
    uf = UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    clusters = uf.clusters()
    drop = {m for root, members in clusters.items() for m in members if m != root}
    return drop, clusters
