"""End to end through the harness: `refinery run docs` on a small real-text corpus."""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import unittest
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import vectorindex
from jobs.batch import BATCH_JOBS, load_batch_config, run_batch_job
from pipelines.documents.demo import build_demo_corpus
from pipelines.documents.qdrant import point_id
from refinery.config import RuntimeConfig

pytestmark = pytest.mark.usefixtures("ray_session")


def small_corpus(root: Path) -> Path:
    """Real text (stdlib docstrings) with one of each problem the pipeline must handle."""
    root.mkdir()
    records = [
        {"id": "argparse", "text": argparse.__doc__},
        {"id": "heapq", "text": heapq.__doc__, "tag": "algorithms"},
        {"id": "heapq-copy", "text": heapq.__doc__.upper().replace("\n", "  \n ")},
        {"id": "unittest", "text": unittest.__doc__},
        {"id": "json", "text": json.__doc__},  # mostly code: fails Gopher's alpha-words rule
    ]
    lines = [json.dumps(r) for r in records] + ['{"id": "broken", "text": ']
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (root / "page.html").write_text(
        f"<html><head><script>var x = 1;</script></head><body><h1>CSV</h1>"
        f"<p>{csv.__doc__}</p></body></html>"
    )
    (root / "spam.txt").write_text("Buy now!!!!!!!!!!!!!!! " + argparse.__doc__)
    return root


def run_docs(corpus: Path, output: Path, runtime: RuntimeConfig):
    job = BATCH_JOBS["docs"]
    cfg = load_batch_config(
        job,
        None,
        overrides=[f"input={corpus}", f"output={output}", "runtime.qdrant.enabled=true"],
    )
    # Chunks of 128 tokens so every document yields several; the test's MLflow store.
    chunk = next(s for s in cfg.steps if s.step == "chunk")
    chunk.size = 128
    cfg.runtime = runtime.model_copy(update={"qdrant": cfg.runtime.qdrant})
    return run_batch_job(job, cfg)


def test_refinery_run_docs_end_to_end(tmp_path: Path, runtime: RuntimeConfig) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    stats = run_docs(corpus, out, runtime)

    written = json.loads((out / "stats.json").read_text())
    assert written["status"] == "FINISHED" and written["mlflow_run_id"] == stats.run_id
    steps = written["steps"]
    assert steps["read"]["rows_out"] == 7 and steps["read"]["quarantined"] == {"invalid_json": 1}
    assert steps["repetition"]["dropped"] == {"char_run": 1}
    assert steps["gopher"]["dropped"] == {"alpha_words": 1}
    assert steps["exact_dedup"]["dropped"] == {"duplicate": 1}
    assert steps["minhash_dedup"]["rows_out"] == 4
    assert written["params"]["minhash"]["bands"] == 14
    quarantine = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert quarantine[0]["reason"] == "invalid_json" and quarantine[0]["line"] == 6
    dropped = {json.loads(x)["id"]: json.loads(x)["rule"] for x in (out / "dropped.jsonl").open()}
    assert dropped == {"json": "alpha_words", str(corpus / "spam.txt"): "char_run"}

    table = pq.read_table(out / "documents")
    assert {"id", "doc_id", "text", "source", "vector", "index_id"} <= set(table.column_names)
    assert set(table["doc_id"].to_pylist()) == {
        "argparse", "heapq", "unittest", str(corpus / "page.html")
    }  # fmt: skip
    vectors = np.asarray(table["vector"].to_pylist(), dtype=np.float32)
    assert vectors.shape == (table.num_rows, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    html_text = " ".join(
        t for t, d in zip(table["text"].to_pylist(), table["doc_id"].to_pylist(), strict=True)
        if d.endswith("page.html")
    )  # fmt: skip
    assert html_text.startswith("CSV") and "var x" not in html_text

    manifest = json.loads((out / "index" / "manifest.json").read_text())
    assert manifest["model"] == "all-MiniLM-L6-v2" and manifest["dimension"] == 384
    assert manifest["count"] == table.num_rows and manifest["metric"] == "ip"
    index = vectorindex.load(manifest["index"])
    assert index.ntotal == table.num_rows and index.d == 384
    scores, ids = index.search(vectors[:3], 1)
    assert ids[:, 0].tolist() == table["index_id"].to_pylist()[:3]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)

    from qdrant_client import QdrantClient

    def qdrant_points() -> int:
        client = QdrantClient(path=f"{runtime.storage.root}/qdrant")
        try:
            some = client.retrieve("refinery", [point_id(table["id"][0].as_py())])
            assert some and some[0].payload["doc_id"] == table["doc_id"][0].as_py()
            return client.count("refinery").count
        finally:
            client.close()

    assert qdrant_points() == table.num_rows

    # A re-run replaces: same chunk ids, same fingerprint, no new Qdrant points.
    run_docs(corpus, out, runtime)
    again = pq.read_table(out / "documents")
    assert sorted(again["id"].to_pylist()) == sorted(table["id"].to_pylist())
    manifest_again = json.loads((out / "index" / "manifest.json").read_text())
    assert manifest_again["corpus_fingerprint"] == manifest["corpus_fingerprint"]
    assert qdrant_points() == table.num_rows

    from mlflow.tracking import MlflowClient

    from refinery.tracking import tracking_uri

    run = MlflowClient(tracking_uri(runtime.tracking, runtime.storage)).get_run(stats.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["exact_dedup.dropped.duplicate"] == 1
    assert run.data.params["result.minhash.rows"] == "8"
    assert run.data.params["outputs.documents"] == str(out / "documents")


def test_demo_corpus_is_real_offline_text(tmp_path: Path) -> None:
    path = build_demo_corpus(str(tmp_path))
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert 50 <= len(records) <= 250
    assert len({r["id"] for r in records}) == len(records)
    assert all(len(r["text"]) >= 500 for r in records)
    assert any("pip install" in r["text"] for r in records)
    assert any(r["format"] == "text/markdown" for r in records)
