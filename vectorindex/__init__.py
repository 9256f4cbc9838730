"""vectorindex: exact (flat) and HNSW vector search in C++ behind a NumPy API.

Searches release the GIL; adds and searches may run at the same time from many threads.
"""

from __future__ import annotations

import os

from vectorindex._core import (
    Index,
    IndexFlat,
    IndexHNSW,
    get_num_threads,
    set_num_threads,
    set_simd_level,
    simd_level,
)
from vectorindex._core import load as _load
from vectorindex.layered import LayeredIndex

__all__ = [
    "Index",
    "IndexFlat",
    "IndexFlatIP",
    "IndexFlatL2",
    "IndexHNSW",
    "LayeredIndex",
    "get_num_threads",
    "load",
    "set_num_threads",
    "set_simd_level",
    "simd_level",
]


class IndexFlatL2(IndexFlat):
    """Exact search by squared L2 distance (smaller is closer)."""

    def __init__(self, d: int, *, quantize: str | None = None, keep_float: bool = True) -> None:
        super().__init__(d, "l2", quantize=quantize, keep_float=keep_float)


class IndexFlatIP(IndexFlat):
    """Exact search by inner product, or cosine with metric="cosine" (higher is closer)."""

    def __init__(
        self,
        d: int,
        metric: str = "ip",
        *,
        quantize: str | None = None,
        keep_float: bool = True,
    ) -> None:
        if metric not in ("ip", "cosine"):
            raise ValueError(f"IndexFlatIP metric must be 'ip' or 'cosine', got {metric!r}")
        super().__init__(d, metric, quantize=quantize, keep_float=keep_float)


def load(path: str | os.PathLike[str], mmap: bool = False) -> Index:
    """Reads an index written by `Index.save`; with mmap the vectors stay in the file's pages.

    Raises ValueError for a truncated or corrupt file and FileNotFoundError for a missing one.
    """
    return _load(path, mmap)
