"""`refinery run reindex` against a champion built by the same job: only the chunks of an edited
document are embedded, a deleted document's chunks go, a changed model forces a full run, the
update log since the champion is folded in (and stays folded in the version after), a version
that fails validation changes nothing that serves, and a rollout's promotion moves `champion`."""

from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import time
import unittest
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.batch import BATCH_JOBS, load_batch_config, run_batch_job
from jobs.cli import main
from pipelines.documents.config import (
    ChunkConfig,
    EmbedConfig,
    ExactDedupConfig,
    LengthFilterConfig,
    NormalizeConfig,
)
from pipelines.documents.write import index_id, write_snapshot
from refinery.config import RuntimeConfig, TrackingConfig
from refinery.embedding import resolve_model_path
from refinery.manifest import Manifest
from refinery.registry import IndexRegistry
from refinery.tracking import tracking_uri
from refinery.update_log import Delete, UpdateLog, Upsert

pytestmark = pytest.mark.usefixtures("ray_session")
DOCS = 24
# Steps that keep a few dozen short documents and cut them into a few chunks each.
STEPS = [
    NormalizeConfig(),
    LengthFilterConfig(min_chars=20),
    ExactDedupConfig(partitions=2),
    ChunkConfig(size=32, overlap=0),
    EmbedConfig(),
]


def corpus_texts(seed: int = 0) -> dict[str, str]:
    """Short documents of real words (a few chunks each), distinct enough to embed apart."""
    words = sorted({w for m in (argparse, heapq, json, unittest, random) for w in
                    re.findall(r"[a-z]{3,}", (m.__doc__ or "").lower())})  # fmt: skip
    rng = random.Random(seed)
    return {f"doc-{i:02d}": " ".join(rng.choices(words, k=45)) + "." for i in range(DOCS)}


def write_corpus(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": doc_id, "text": text}) for doc_id, text in texts.items()]
    (folder / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@dataclass
class Setup:
    runtime: RuntimeConfig
    registry: IndexRegistry
    texts: dict[str, str]
    champion: str  # snapshot directory
    champion_version: str  # registry version
    root: Path


def reindex(setup: Setup, corpus: Path, output: Path, *overrides: str):
    job = BATCH_JOBS["reindex"]
    cfg = load_batch_config(
        job,
        None,
        overrides=[
            f"input={corpus}",
            f"output={output}",
            f"reindex.registry.name={setup.registry.name}",
            *overrides,
        ],
    )
    cfg.steps = STEPS
    cfg.runtime = setup.runtime.model_copy(
        update={"embedding": cfg.runtime.embedding, "qdrant": cfg.runtime.qdrant}
    )
    return run_batch_job(job, cfg)


def report(output: Path) -> dict:
    return json.loads((output / "stats.json").read_text())["reindex"]


def documents(snapshot: str) -> dict[str, dict]:
    """Rows of a version by chunk id, with their vectors."""
    table = pq.read_table(Manifest.read(snapshot).documents)
    return {row["id"]: row for row in table.to_pylist()}


@pytest.fixture(scope="module")
def setup(mlflow_storage, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    runtime = RuntimeConfig(storage=mlflow_storage)
    runtime.tracking.experiment = "tests"
    name = f"test-reindex-{uuid.uuid4().hex[:8]}"
    registry = IndexRegistry(tracking_uri(runtime.tracking, runtime.storage), name)
    root = tmp_path_factory.mktemp("reindex")
    texts = corpus_texts()
    partial = Setup(runtime, registry, texts, "", "", root)
    reindex(partial, write_corpus(root / "corpus", texts), root / "out")
    first = report(root / "out")
    assert first["mode"] == "full" and first["full_reason"] == "no champion"
    assert first["counts"]["reused"] == 0 and first["counts"]["embedded"] > DOCS
    version = first["registry"]["version"]
    registry.set_alias("champion", version, "the first version")
    return Setup(runtime, registry, texts, first["snapshot"], version, root)


def test_an_edited_document_is_the_only_one_embedded(setup: Setup, tmp_path: Path) -> None:
    texts = dict(setup.texts)
    texts["doc-03"] = texts["doc-03"].replace(" ", " changed ", 3)
    reindex(setup, write_corpus(tmp_path / "corpus", texts), tmp_path / "out")

    found = report(tmp_path / "out")
    before, after = documents(setup.champion), documents(found["snapshot"])
    embedded = [i for i, row in after.items() if before.get(i, {}).get("text") != row["text"]]
    assert embedded and {after[i]["doc_id"] for i in embedded} == {"doc-03"}
    counts = found["counts"]
    assert found["mode"] == "incremental"
    assert counts["embedded"] == len(embedded)
    assert counts["reused"] == len(after) - len(embedded)
    # Reused vectors are the champion's, bit for bit.
    for i, row in after.items():
        if i not in embedded:
            assert row["vector"] == before[i]["vector"]
    # Registered as challenger; the champion's alias and files are as they were.
    assert found["registry"]["alias"] == "challenger"
    versions = {v["version"]: v["aliases"] for v in setup.registry.versions()}
    assert versions[setup.champion_version] == ["champion"]
    assert versions[found["registry"]["version"]] == ["challenger"]
    assert Path(Manifest.read(setup.champion).index).is_file()
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["status"] == "FINISHED" and found["validation"]["passed"]


def test_a_deleted_documents_chunks_are_gone(setup: Setup, tmp_path: Path) -> None:
    texts = {k: v for k, v in setup.texts.items() if k != "doc-07"}
    reindex(setup, write_corpus(tmp_path / "corpus", texts), tmp_path / "out")

    found = report(tmp_path / "out")
    gone = [i for i, row in documents(setup.champion).items() if row["doc_id"] == "doc-07"]
    after = documents(found["snapshot"])
    assert gone and not any(row["doc_id"] == "doc-07" for row in after.values())
    assert found["counts"]["deleted"] == len(gone)
    assert found["counts"]["embedded"] == 0 and found["counts"]["reused"] == len(after)


def test_a_champion_the_documents_job_wrote_is_reused(setup: Setup, tmp_path: Path) -> None:
    job = BATCH_JOBS["docs"]
    corpus = write_corpus(tmp_path / "corpus", setup.texts)
    cfg = load_batch_config(job, None, overrides=[f"input={corpus}", f"output={tmp_path / 'docs'}"])
    cfg.steps = STEPS
    cfg.runtime = setup.runtime
    run_batch_job(job, cfg)
    reindex(setup, corpus, tmp_path / "out", f"reindex.champion={tmp_path / 'docs' / 'index'}")

    found = report(tmp_path / "out")
    assert found["mode"] == "incremental" and found["counts"]["embedded"] == 0
    assert found["counts"]["reused"] == found["counts"]["total"] > DOCS
    # Serve's default log, beside the champion's snapshot folder.
    assert found["log"]["location"] == str(tmp_path / "docs" / "updates")


def test_a_changed_model_forces_a_full_run(setup: Setup, tmp_path: Path) -> None:
    # The same weights under another name: the manifest's model no longer matches.
    model = resolve_model_path("all-MiniLM-L6-v2")
    corpus = write_corpus(tmp_path / "corpus", setup.texts)
    reindex(setup, corpus, tmp_path / "out", f"runtime.embedding.model={model}")

    found = report(tmp_path / "out")
    assert found["mode"] == "full" and "embedding model changed" in found["full_reason"]
    assert found["counts"]["reused"] == 0
    assert found["counts"]["embedded"] == found["counts"]["total"]
    assert Manifest.read(found["snapshot"]).model == model
    overlap = next(c for c in found["validation"]["checks"] if c["name"] == "overlap_at_10")
    assert overlap["passed"] is None  # vectors of two models are not compared


def test_the_update_log_since_the_champion_is_folded_in(setup: Setup, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", setup.texts)
    log = UpdateLog(str(tmp_path / "updates"))
    deleted = next(i for i, r in documents(setup.champion).items() if r["doc_id"] == "doc-11")
    live = np.random.default_rng(0).normal(size=384).astype(np.float32)
    live /= np.linalg.norm(live)
    payload = {"id": "live@0", "doc_id": "live", "text": "a document upserted through the API"}
    log.append([Upsert(7_000_001, live, payload)])
    last = log.append([Delete((index_id(deleted),))])

    first = tmp_path / "first"
    reindex(setup, corpus, first, f"reindex.update_log={log.location}")
    found = report(first)
    assert found["log"]["records"] == 2 and found["update_log_position"] == last
    assert Manifest.read(found["snapshot"]).update_log_position == last
    rows = documents(found["snapshot"])
    assert deleted not in rows
    assert rows["live@0"]["index_id"] == 7_000_001
    assert np.allclose(rows["live@0"]["vector"], live)

    # The next version, from this one: the same log (recorded by the version), read after its
    # position, and what was folded stays folded (the corpus still holds the deleted chunk).
    log.append([Upsert(7_000_002, live, {"id": "later@0", "text": "after the first"})])
    second = tmp_path / "second"
    reindex(setup, corpus, second, f"reindex.champion={found['snapshot']}")
    again = report(second)
    assert again["log"]["location"] == log.location and again["log"]["records"] == 1
    rows = documents(again["snapshot"])
    assert deleted not in rows and "live@0" in rows and "later@0" in rows
    assert again["update_log_position"] == last + 1


def test_a_version_that_fails_validation_changes_nothing(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A third of the documents gone: outside the configured +-20%.
    texts = {k: v for i, (k, v) in enumerate(setup.texts.items()) if i % 3}
    corpus = write_corpus(tmp_path / "corpus", texts)
    before = setup.registry.versions()
    champion_files = sorted(p for p in Path(setup.champion).parent.rglob("*"))
    out = tmp_path / "out"
    code = main([
        "run", "reindex", "--input", str(corpus), "--output", str(out), "--full",
        "--set", f"reindex.registry.name={setup.registry.name}",
        "--set", f"runtime.storage.root={setup.runtime.storage.root}",
        "--set", "runtime.tracking.experiment=tests",
        "--set", "steps=[{step: normalize}, {step: length, min_chars: 20}, "
                 "{step: exact_dedup, partitions: 2}, {step: chunk, size: 32, overlap: 0}, "
                 "{step: embed}]",
    ])  # fmt: skip
    assert code == 1
    assert "failed validation: documents_change" in capsys.readouterr().err

    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == "FAILED"
    assert stats["reindex"]["full_reason"] == "asked for (reindex.full)"
    validation = stats["reindex"]["validation"]
    assert not validation["passed"] and "documents_change" in validation["failed"]
    assert setup.registry.versions() == before  # nothing registered, no alias moved
    assert sorted(p for p in Path(setup.champion).parent.rglob("*")) == champion_files


def test_a_rollouts_promotion_makes_its_version_champion(mlflow_storage, tmp_path: Path) -> None:
    from serve.canary import rollout as verbs
    from serve.canary.controller import CanaryController
    from serve.canary.rollout import RegistryVersion, Rollout, RolloutConfig

    uri = tracking_uri(TrackingConfig(), mlflow_storage)
    registry = IndexRegistry(uri, f"test-canary-{uuid.uuid4().hex[:8]}")
    table = pa.table({"id": ["a@0", "b@0"], "text": ["a", "b"]})
    first, second = (
        registry.register(write_snapshot(str(tmp_path / name), table, np.eye(2, 4, k=n)))
        for n, name in enumerate(("first", "second"))
    )
    registry.set_alias("champion", first, "serving")
    controller = CanaryController("app", str(tmp_path / "canary"))
    registered = RegistryVersion(uri=uri, name=registry.name, version=second, previous=first)
    running = Rollout.start("app", "v2", "v1", RolloutConfig(), 0.0)
    running = running.model_copy(update={"registry": registered})

    promoted = verbs.promote(running, 1.0)
    controller._move_champion(running, promoted)
    assert registry.show("champion")["version"] == second
    controller._move_champion(promoted, verbs.rollback(promoted, 2.0))
    assert registry.show("champion")["version"] == first
    assert [move["to"] for move in registry.history()] == [first, second, first]


def test_qdrant_gets_a_collection_per_version_and_an_alias_switch(
    setup: Setup, tmp_path: Path
) -> None:
    from qdrant_client.models import Distance, VectorParams

    from pipelines.documents.reindex.qdrant import QdrantAliasError
    from refinery.qdrant import connect

    alias = f"reindex-{uuid.uuid4().hex[:8]}"
    qdrant = ["runtime.qdrant.enabled=true", f"runtime.qdrant.collection={alias}"]
    corpus = write_corpus(tmp_path / "corpus", setup.texts)
    reindex(setup, corpus, tmp_path / "out", *qdrant)
    first = report(tmp_path / "out")["qdrant"]
    texts = {k: v for k, v in setup.texts.items() if k != "doc-05"}
    reindex(setup, write_corpus(tmp_path / "corpus", texts), tmp_path / "out", *qdrant)
    second = report(tmp_path / "out")

    assert first["previous"] is None and second["qdrant"]["previous"] == first["collection"]
    client = connect(setup.runtime.qdrant, setup.runtime.storage.root)
    try:
        named = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        assert named[alias] == second["qdrant"]["collection"]
        # The one before is kept for a rollback; readers of the alias see the new version.
        assert client.collection_exists(first["collection"])
        assert client.count(alias).count == second["counts"]["total"]
        # An alias cannot take a collection's name: the reindex refuses before building.
        taken = f"{alias}-taken"
        client.create_collection(taken, VectorParams(size=4, distance=Distance.COSINE))
    finally:
        client.close()
    with pytest.raises(QdrantAliasError, match="is a collection, not an alias"):
        reindex(setup, corpus, tmp_path / "refused", "runtime.qdrant.enabled=true",
                f"runtime.qdrant.collection={taken}")  # fmt: skip


@pytest.mark.slow
def test_a_reindexed_version_rolls_out_on_serve_and_becomes_champion(
    setup: Setup, tmp_path: Path
) -> None:
    """End to end: Serve serves models:/NAME@champion, a reindex with `reindex.rollout` hands
    its version to the app's canary controller, the rollout passes under load, and the registry's
    champion is then the version that serves as stable."""
    import socket
    import threading

    import httpx
    import ray
    from ray import serve

    from serve.canary.controller import find_controller
    from serve.deploy import deploy_applications, wait_running

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app, url = "reindexed", f"http://127.0.0.1:{port}/reindexed"
    args = {
        "version": "champion-1",
        "index": {
            "snapshot": f"models:/{setup.registry.name}@champion",
            "registry_uri": setup.registry.uri,
        },
        "ingress": {"num_cpus": 0},
        "embedding": {"num_cpus": 0},
        "limits": {"requests_per_s": 100_000, "burst": 100_000},
    }
    config = {"name": app, "route_prefix": "/reindexed", "import_path": "serve.app:build",
              "args": args}  # fmt: skip
    deploy_applications([config], keep_others=True)
    statuses: Counter = Counter()
    stop = threading.Event()

    def search_load() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                # An unchanged document: its hits are the same chunks in both versions.
                body = {"texts": [setup.texts["doc-05"][:80]], "k": 5}
                statuses[client.post("/v1/search", json=body).status_code] += 1

    load = threading.Thread(target=search_load, daemon=True)
    try:
        assert wait_running([app], timeout_s=300) == {}
        load.start()
        texts = dict(setup.texts)
        texts["doc-03"] = texts["doc-03"].replace(" ", " edited ", 3)
        # What this judges is the hand-over and the promotion; a loaded machine makes the
        # embedder slow, so the latency gate is wide and the shadow light.
        canary = ('{"steps": [50, 100], "interval_s": 1, "min_requests": 10, "shadow": 0.2, '
                  '"gates": {"max_p99_s": 60, "min_shadow_pairs": 5}}')  # fmt: skip
        reindex(setup, write_corpus(tmp_path / "corpus", texts), tmp_path / "out",
                "reindex.rollout=true", f"reindex.app={app}", f"reindex.canary={canary}",
                f"reindex.canary_state={tmp_path / 'canary'}")  # fmt: skip
        found = report(tmp_path / "out")
        assert found["rollout"]["status"] == "running", found["rollout"]
        new = found["registry"]["version"]

        deadline = time.monotonic() + 300
        while setup.registry.show("champion")["version"] != new:
            if time.monotonic() > deadline:
                status = ray.get(find_controller(app).status.remote())
                raise AssertionError(f"not promoted: {status['reason']}; {status['gates']}")
            time.sleep(0.5)
        stop.set()
        load.join(timeout=60)
        assert set(statuses) == {200} and statuses[200] > 20, statuses
        answer = httpx.post(url + "/v1/search", json={"texts": ["x"], "k": 1}, timeout=60)
        assert answer.headers["X-Refinery-Version"] == f"stable/{found['version']}"
        served = httpx.get(url + "/readyz", timeout=60).json()["routing"]
        assert served["index"]["snapshot"] == found["snapshot"] and served["canary"]["weight"] == 0
        assert setup.registry.history()[-1]["to"] == new
    finally:
        stop.set()
        controller = find_controller(app)
        if controller is not None:
            ray.kill(controller, no_restart=True)
        serve.shutdown()
        setup.registry.set_alias("champion", setup.champion_version, "the test's champion again")
