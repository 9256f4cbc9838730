"""Dedup on Ray: quality against exact Jaccard, determinism, and a worker killed mid-job."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import ray.cloudpickle
from docs_corpus import dedup_steps, true_jaccard

from pipelines.documents.steps import Doc, Filter

pytestmark = pytest.mark.usefixtures("ray_session")


def test_minhash_precision_and_recall_against_exact_jaccard(planted, run_steps) -> None:
    docs, source = planted
    truth = true_jaccard(docs)
    result = run_steps(source, dedup_steps(4)[1:])  # near-dedup alone: it must find all
    same_cluster = {
        pair
        for cluster in result["clusters"]
        for pair in itertools.combinations(cluster["members"], 2)
    }
    confirmed = [tuple(p) for cluster in result["clusters"] for p in cluster["pairs"]]
    positives = [pair for pair, j in truth.items() if j >= 0.85]
    assert len(positives) >= 80, "the planted corpus must hold enough near-duplicate pairs"
    recall = sum(pair in same_cluster for pair in positives) / len(positives)
    precision = sum(truth.get(pair, 0.0) >= 0.8 for pair in confirmed) / len(confirmed)
    assert recall >= 0.95, recall
    assert precision >= 0.98, precision
    kept = set(result["ids"])
    assert len(kept) == len(docs) - result["stats"]["minhash_dedup"]["dropped"]["near_duplicate"]
    # Every cluster keeps exactly its smallest id.
    for cluster in result["clusters"]:
        assert kept & set(cluster["members"]) == {cluster["representative"]}
        assert cluster["representative"] == min(cluster["members"])
    minhash = result["params"]["minhash"]
    assert (minhash["bands"], minhash["rows"]) == (14, 8)
    assert minhash["p_candidate_at_threshold"] > 0.92


def test_same_kept_ids_with_one_or_many_workers_and_on_rerun(planted, run_steps) -> None:
    _, source = planted
    # One read task, one block, one shuffle partition: everything passes through one worker.
    single = run_steps(source, dedup_steps(1), files_per_task=100, name="single")
    many = run_steps(source, dedup_steps(8), files_per_task=1, name="many")
    again = run_steps(source, dedup_steps(8), files_per_task=1, name="again")
    assert single["ids"] == many["ids"] == again["ids"]
    assert single["clusters"] == many["clusters"] == again["clusters"]
    assert single["stats"]["minhash_dedup"]["dropped"]["near_duplicate"] > 20


class KillOnce(Filter):
    """Kills the worker process running it the first time (a marker file remembers)."""

    name = "kill_once"

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def filter(self, doc: Doc) -> bool | str:
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return True


def test_worker_killed_mid_job_gives_the_same_output(planted, run_steps, tmp_path) -> None:
    import sys

    _, source = planted
    # Workers import this test module by value: it is not on their import path.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "kill.marker"
    baseline = run_steps(source, dedup_steps(4), name="baseline")
    killed = run_steps(source, [KillOnce(marker), *dedup_steps(4)], name="killed")
    assert marker.exists() and int(marker.read_text()) != os.getpid()
    assert killed["ids"] == baseline["ids"]
    assert killed["clusters"] == baseline["clusters"]
    assert killed["stats"]["kill_once"]["rows_out"] == killed["stats"]["read"]["rows_out"]
    for step in ("read", "exact_dedup", "minhash_dedup"):
        counts = ("rows_in", "rows_out", "dropped", "quarantined")
        assert {k: killed["stats"][step][k] for k in counts} == {
            k: baseline["stats"][step][k] for k in counts
        }
