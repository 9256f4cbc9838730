"""Exact float64 references for the vectorindex tests."""

from __future__ import annotations

import numpy as np

import vectorindex as vi


def simd_levels() -> list[str]:
    """Every kernel level this CPU can run (each is tested, not just the best)."""
    levels = []
    for name in ("avx512", "avx2", "base"):
        try:
            vi.set_simd_level(name)
        except ValueError:
            continue
        levels.append(name)
    vi.set_simd_level(levels[0])
    return levels


def true_scores(xb: np.ndarray, xq: np.ndarray, metric: str) -> np.ndarray:
    """(nq, n) float64: squared L2 distance, or the inner product (cosine: of unit vectors)."""
    b, q = xb.astype(np.float64), xq.astype(np.float64)
    if metric == "cosine":
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
    if metric == "l2":
        return ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return q @ b.T


def scale(xb: np.ndarray, xq: np.ndarray, metric: str) -> np.ndarray:
    """(nq, 1) magnitude of the scores, for tolerances that also hold near zero."""
    if metric == "cosine":
        return np.ones((len(xq), 1))
    nb = float((xb.astype(np.float64) ** 2).sum(1).max()) if len(xb) else 0.0
    nq = (xq.astype(np.float64) ** 2).sum(1, keepdims=True)
    if metric == "l2":
        return nq + nb
    return np.sqrt(nq * nb)


def assert_exact(
    dist: np.ndarray,
    found: np.ndarray,
    xb: np.ndarray,
    ids: np.ndarray,
    xq: np.ndarray,
    k: int,
    metric: str,
    rtol: float = 1e-4,
) -> None:
    """dist/found equal exact search up to exact ties: the same distances in order (within rtol
    of the scores' magnitude), every id real and its distance the one reported, -1 only past n."""
    n = len(xb)
    S = true_scores(xb, xq, metric)
    tol = rtol * scale(xb, xq, metric) + 1e-6
    order = np.argsort(S if metric == "l2" else -S, axis=1, kind="stable")[:, :k]
    want = np.take_along_axis(S, order, axis=1)
    assert dist.shape == found.shape == (len(xq), k)
    assert dist.dtype == np.float32 and found.dtype == np.int64
    assert (found[:, n:] == -1).all()
    got_ids = found[:, : min(n, k)]
    assert (got_ids >= 0).all()
    pos = {int(i): p for p, i in enumerate(ids)}
    cols = np.vectorize(pos.__getitem__)(got_ids) if got_ids.size else got_ids
    got = np.take_along_axis(S, cols, axis=1)
    assert np.all(np.abs(got - want[:, : got.shape[1]]) <= tol)
    assert np.all(np.abs(dist[:, : got.shape[1]] - got) <= tol)
    for row in got_ids:
        assert len(set(row.tolist())) == len(row)
