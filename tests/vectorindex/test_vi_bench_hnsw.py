"""The HNSW bench's side-by-side comparison on a small generated set: every vectorindex set-up
against hnswlib, recall per ef, QPS at a recall, build and memory ratios (no Ray)."""

from __future__ import annotations

import argparse

import pytest

from bench.index import SETUPS, add_arguments, compare_hnsw, synthetic


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--repeat", "1", "--ef-construction", "40", *argv])


def test_every_setup_is_compared_with_hnswlib_at_the_recall_levels() -> None:
    x = synthetic("gmm128", 2_200)
    xb, xq = x[:2_000], x[2_000:]
    result = compare_hnsw(xb, xq, "l2", [0.9], _args())
    assert set(result["build_ratio"]) == set(SETUPS)
    for name in [*SETUPS, "hnswlib"]:
        assert result["memory_bytes_per_vector"][name] > 128 * 4
        # The ef grid goes on until the level is passed; QPS there comes from timed efs.
        assert max(result["recall_by_ef"][name].values()) >= 0.9
        for threads in (1, 2):
            assert result["qps_at_recall"]["wall"][name][threads][0.9] > 0
    # The int8 walk keeps the floats beside its codes.
    memory = result["memory_bytes_per_vector"]
    assert memory["vectorindex-int8"] > memory["vectorindex"]


def test_an_unknown_setup_is_refused_by_name() -> None:
    x = synthetic("gmm128", 600)
    with pytest.raises(SystemExit, match="unknown set-up vectorindex-pq"):
        compare_hnsw(x[:500], x[500:], "l2", [0.9], _args("--setups", "vectorindex-pq"))
