"""A read-only base index plus an in-memory delta that takes the updates.

An index loaded with mmap reads its vectors from the file's pages, which every process mapping
the file shares; writing to those vectors would copy the whole store into the process. Here
updates never touch the base's vectors: new and replaced vectors go to a small flat delta of
the same metric and quantisation (so scores compare), and the base's rows of replaced or
deleted ids are only marked deleted (a byte per row the base already holds; a mapped base
never compacts on removal). A process's own memory then grows with what was updated, not with
the index. A later rebuild folds the delta into a new base.

Ordering, so that readers need no lock: an upsert adds the new vector to the delta before it
marks the base's row, and a search reads the base before the delta. A search that finds an
id's base row already marked therefore finds its new vector in the delta; one that runs in
between may find both, and keeps the first (either state is one the id had). A delete marks
the id in both, so a deleted id never comes back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from vectorindex._core import Index, IndexFlat


class LayeredIndex:
    """`base` (left read-only) plus a delta for updates; searches merge the two."""

    def __init__(self, base: Index) -> None:
        self.base = base
        self.delta = IndexFlat(
            base.d, base.metric, quantize=base.quantize, keep_float=base.keep_float
        )
        # Writers serialise so each keeps the delta-then-base order whole; readers never lock.
        self._write_lock = threading.Lock()

    @property
    def d(self) -> int:
        return self.base.d

    @property
    def metric(self) -> str:
        return self.base.metric

    @property
    def quantize(self) -> str | None:
        return self.base.quantize

    @property
    def keep_float(self) -> bool:
        return self.base.keep_float

    @property
    def ntotal(self) -> int:
        """Live vectors; an id counts once except while an upsert of it is under way."""
        return self.base.ntotal + self.delta.ntotal

    def __len__(self) -> int:
        return self.ntotal

    def ids(self) -> np.ndarray:
        """The live ids: the base's in slot order, then the delta's."""
        return np.concatenate([self.base.ids(), self.delta.ids()])

    def memory_usage(self) -> int:
        """Bytes held in memory by both layers (the base's mapped file excluded)."""
        return self.base.memory_usage() + self.delta.memory_usage()

    def upsert(self, xb: np.ndarray, ids: Any) -> None:
        """Adds or replaces the vectors of `ids` (distinct), each change atomic for readers."""
        ids = np.asarray(ids, dtype=np.int64)
        with self._write_lock:
            self.delta.upsert(xb, ids)
            self.base.remove_ids(ids)

    def remove_ids(self, ids: Any) -> int:
        """Deletes ids from both layers; returns how many were present."""
        ids = np.asarray(ids, dtype=np.int64)
        with self._write_lock:
            return self.base.remove_ids(ids) + self.delta.remove_ids(ids)

    def search(
        self,
        xq: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
        threads: int | None = None,
        **base_args: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As `Index.search` over the union of the layers; `base_args` (ef_search, rerank) go
        to the base's search. ValueError for bad input, or when both layers are empty."""
        base = self._search_layer(self.base, xq, k, allowed_ids, threads, base_args)
        # After the base: see the module docstring.
        delta = self._search_layer(self.delta, xq, k, allowed_ids, threads, {})
        if base is None and delta is None:
            raise ValueError("the index is empty")
        if delta is None:
            return base
        if base is None:
            return delta
        return self._merge(base, delta, k)

    @staticmethod
    def _search_layer(layer, xq, k, allowed_ids, threads, args):
        if layer.ntotal == 0:
            return None
        try:
            return layer.search(xq, k, allowed_ids=allowed_ids, threads=threads, **args)
        except ValueError:
            # Emptied by a concurrent delete since the count above: a layer with no hits.
            if layer.ntotal:
                raise
            return None

    def _merge(self, base, delta, k):
        scores = np.concatenate([base[0], delta[0]], axis=1)
        ids = np.concatenate([base[1], delta[1]], axis=1)
        key = scores if self.metric == "l2" else -scores
        # Stable, so a tie keeps the base's hit first, as one index holding both would.
        order = np.argsort(key, axis=1, kind="stable")
        scores = np.take_along_axis(scores, order, axis=1)
        ids = np.take_along_axis(ids, order, axis=1)
        both = np.intersect1d(base[1][base[1] >= 0], delta[1][delta[1] >= 0])
        if len(both):
            scores, ids = _drop_repeats(scores, ids, both, self.metric)
        return np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(ids[:, :k])


def _drop_repeats(scores: np.ndarray, ids: np.ndarray, both: np.ndarray, metric: str):
    """An id caught mid-upsert in both layers: keeps its better hit, moves the other to the end
    as a missing result (id -1) so every row keeps its width."""
    none = np.float32(np.inf if metric == "l2" else -np.inf)
    for r in np.flatnonzero(np.isin(ids, both).any(axis=1)):
        _, first = np.unique(ids[r], return_index=True)
        keep = np.zeros(ids.shape[1], dtype=bool)
        keep[first] = True
        keep |= ids[r] < 0
        kept = np.flatnonzero(keep)
        width = ids.shape[1]
        ids[r] = np.concatenate([ids[r, kept], np.full(width - len(kept), -1)])
        scores[r] = np.concatenate([scores[r, kept], np.full(width - len(kept), none)])
    return scores, ids
