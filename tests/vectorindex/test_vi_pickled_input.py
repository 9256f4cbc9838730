"""Arrays that crossed a process boundary (Ray, pickle) carry a copy of their dtype object;
the index must accept them like any other float32 array."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import vectorindex


def test_unpickled_float32_queries_and_vectors_are_accepted() -> None:
    vectors = pickle.loads(pickle.dumps(np.eye(4, dtype=np.float32)))
    assert vectors.dtype is not np.dtype(np.float32)  # the case this test is about
    index = vectorindex.IndexFlatIP(4)
    index.add(vectors)
    scores, ids = index.search(pickle.loads(pickle.dumps(vectors[2:3])), 1)
    assert ids.tolist() == [[2]] and scores.tolist() == [[1.0]]


def test_big_endian_float32_is_still_rejected() -> None:
    index = vectorindex.IndexFlatL2(4)
    index.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="got dtype >f4"):
        index.search(np.eye(4, dtype=">f4"), 1)
