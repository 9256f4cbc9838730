"""MinHash LSH pieces (no Ray): band choice, band keys from signatures, union-find."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash


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


def shingle_hashes(tokens: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Per document: the sorted distinct 64-bit hashes of its word n-grams (the n-grams of
    text.shingles), from its token hashes (text.token_hashes). An n-gram's hash is a
    polynomial of its tokens' hashes computed in numpy, so no n-gram string is ever built,
    which is most of the per-document cost of shingling in Python."""
    return [np.unique(_ngram_hashes(hashes, n)) for hashes in tokens]


# Odd 64-bit multiplier (golden ratio) for polynomial hashes; numpy wraps modulo 2^64.
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """Hash of every run of n token hashes; a text shorter than n tokens is one n-gram."""
    n = min(n, len(tokens))
    count = len(tokens) - n + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for i in range(n):
        hashes = hashes * _MULTIPLIER + tokens[i : i + count]
    return hashes


def jaccard_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted distinct hash arrays."""
    common = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - common
    return common / union if union else 1.0


def signatures(hashes: list[np.ndarray], num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures of shingle-hash arrays, one row per document (uint32 [n, num_perm])."""
    # The shingles are hashed already: datasketch only permutes them and takes the minima
    # (its affine32 scheme reads 32-bit hashes: the low half).
    low = [(h & 0xFFFFFFFF).astype(np.uint32) for h in hashes]
    minhashes = MinHash.bulk(low, num_perm=num_perm, seed=seed, hashfunc=_prehashed)
    if not minhashes:
        return np.empty((0, num_perm), dtype=np.uint32)
    return np.stack([m.hashvalues for m in minhashes])


def _prehashed(value: np.uint32) -> np.uint32:
    return value


def band_keys(sigs: np.ndarray, banding: Banding) -> np.ndarray:
    """One 64-bit key per document and band (uint64 [n, bands]): the band number and the
    band's rows, hashed together so equal bands of different band numbers never meet. A
    false collision only adds a candidate pair, which the exact check removes."""
    n = len(sigs)
    rows = sigs[:, : banding.bands * banding.rows].astype(np.uint64)
    rows = rows.reshape(n, banding.bands, banding.rows)
    keys = np.tile(np.arange(banding.bands, dtype=np.uint64), (n, 1))
    for r in range(banding.rows):
        keys = keys * _MULTIPLIER + rows[:, :, r]
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
