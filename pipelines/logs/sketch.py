"""A mergeable quantile sketch: DDSketch-style logarithmic buckets with counts.

A value x > 0 falls in bucket i = ceil(log_gamma(x)); every value in that bucket is within
ALPHA of the bucket's representative, so any quantile is returned with relative error at
most ALPHA (0.5%, inside the 1% the issue allows) whatever the data. Sketches of two blocks
merge by adding counts per bucket, which is what lets the Ray engine aggregate block by
block. Zero and negative values get their own key ranges so keys sort like the values.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.005
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = np.log(GAMMA)
# Positive keys stay within +-72,000 for any finite double; zero and negatives sit below.
_ZERO_KEY = -(1 << 20)
_NEGATIVE_BASE = -(1 << 22)


def keys(values: np.ndarray) -> np.ndarray:
    """Bucket key of each value (float64, no NaN), as int32; keys sort like their values."""
    if len(values) and values.min() > 0:  # the usual case (latencies): one vectorised pass
        return np.ceil(np.log(values) / _LOG_GAMMA).astype(np.int32)
    magnitude = np.abs(values)
    with np.errstate(divide="ignore"):
        index = np.ceil(np.log(magnitude) / _LOG_GAMMA)
    index = np.where(magnitude > 0, index, 0).astype(np.int32)
    out = np.where(values > 0, index, np.int32(_ZERO_KEY))
    return np.where(values < 0, _NEGATIVE_BASE - index, out).astype(np.int32)


def representative(key: np.ndarray) -> np.ndarray:
    """The value a bucket stands for: within ALPHA of everything in it."""
    key = np.asarray(key, dtype=np.int64)
    positive = key > _ZERO_KEY
    negative = key < _ZERO_KEY
    index = np.where(positive, key, np.where(negative, _NEGATIVE_BASE - key, 0))
    value = 2 * GAMMA ** index.astype(np.float64) / (GAMMA + 1)
    return np.where(positive, value, np.where(negative, -value, 0.0))


def grouped_quantiles(
    bucket_keys: np.ndarray, counts: np.ndarray, starts: np.ndarray, q: float
) -> np.ndarray:
    """The q-quantile (0 < q < 1) of each group of a sketch: rows sorted by (group, key),
    group g spanning rows starts[g]..starts[g+1]. Rank as DuckDB's quantile_disc and numpy's
    'inverted_cdf': the smallest value with at least q of the group at or below it. NaN for
    a group without values."""
    if not len(bucket_keys):
        return np.full(len(starts), np.nan)
    cumulative = np.cumsum(counts)
    padded = np.concatenate(([0], cumulative))
    ends = np.append(starts[1:], len(bucket_keys))
    before = padded[starts]
    totals = padded[ends] - before
    # The epsilon keeps q * n = 95.00000000000001 from moving up one rank.
    rank = np.maximum(np.ceil(q * totals - 1e-9) - 1, 0)
    position = np.searchsorted(cumulative, before + rank, side="right")
    values = representative(bucket_keys[np.minimum(position, len(bucket_keys) - 1)])
    return np.where(totals > 0, values, np.nan)
