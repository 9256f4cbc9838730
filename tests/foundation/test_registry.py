"""The index registry against a real sqlite MLflow store: snapshots written by the document
pipeline's writer registered as versions with their lineage, aliases moved with a history read
back through the CLI, `models:/` URIs resolved, and a Serve-less SearchService loading by alias."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs.cli import main
from pipelines.documents.write import write_snapshot
from refinery.config import StorageConfig, TrackingConfig
from refinery.manifest import Manifest
from refinery.registry import (
    IndexRegistry,
    RegistryError,
    RegistryUnreachable,
    resolve_snapshot,
)
from refinery.tracking import tracking_uri
from serve.config import LimitsConfig
from serve.embed_service import EmbedService
from serve.protocol import SearchRequest
from serve.search_service import SearchService

DOCS, DIM = 8, 4


def vectors(seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(DOCS, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def snapshot(out: Path, first_id: int, seed: int) -> str:
    ids = np.arange(first_id, first_id + DOCS, dtype=np.int64)
    table = pa.table(
        {"id": [f"doc-{i}" for i in ids], "index_id": ids, "text": [f"text {i}" for i in ids]}
    )
    return write_snapshot(str(out), table, vectors(seed), model="test-model")


@dataclass
class Registered:
    uri: str
    first: str  # snapshot directories
    second: str
    v1: str  # their registry versions
    v2: str
    pipeline_run: str
    corpus: str


def cli(uri: str, *args: str) -> int:
    return main(["registry", *args, "--tracking-uri", uri])


@pytest.fixture(scope="module")
def registered(
    mlflow_storage: StorageConfig, tmp_path_factory: pytest.TempPathFactory
) -> Registered:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = tracking_uri(TrackingConfig(uri=None), mlflow_storage)
    first = snapshot(root / "first", 100, seed=1)
    second = snapshot(root / "second", 500, seed=2)
    # The documents job's own record beside its snapshot: its MLflow run and what it wrote.
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests") or client.get_experiment(
        client.create_experiment("tests")
    )
    corpus = str(root / "corpus")
    run = client.create_run(experiment.experiment_id, run_name="docs")
    client.log_param(run.info.run_id, "input", corpus)
    client.set_terminated(run.info.run_id)
    stats = {"mlflow_run_id": run.info.run_id, "outputs": {"index": Manifest.read(first).index},
             "steps": {"read": {"rows_in": DOCS, "rows_out": DOCS}}}  # fmt: skip
    (root / "first" / "stats.json").write_text(json.dumps(stats))

    registry = IndexRegistry(uri)
    v1 = registry.register(first)
    registry.set_alias("champion", v1, "first index")
    register = [second, "--alias", "challenger", "--metric", "recall_at_10=0.95"]
    assert cli(uri, "register", *register, "--param", "k=10", "--source", "s3://b/c2/") == 0
    v2 = registry.versions()[-1]["version"]
    assert cli(uri, "alias", "champion", v2, "--why", "challenger recalls more") == 0
    return Registered(uri, first, second, v1, v2, run.info.run_id, corpus)


def test_each_version_carries_its_lineage(registered: Registered) -> None:
    registry = IndexRegistry(registered.uri)
    first, second = registry.show(registered.v1), registry.show(registered.v2)
    manifest = Manifest.read(registered.first)
    assert first["source"] == registered.first
    assert first["tags"] == {
        "model": "test-model",
        "dimension": str(DIM),
        "metric": "ip",
        "count": str(DOCS),
        "corpus_fingerprint": manifest.corpus_fingerprint,
        "snapshot_version": manifest.version,
    }
    # The pipeline run found through the job's stats.json, the corpus as its dataset input.
    assert first["run"]["run_id"] == registered.pipeline_run
    [corpus] = first["run"]["inputs"]
    assert manifest.corpus_fingerprint.startswith(corpus["digest"])
    assert corpus["profile"]["corpus_fingerprint"] == manifest.corpus_fingerprint
    assert corpus["profile"]["chunks"] == DOCS
    assert corpus["profile"]["steps"]["read"] == {"rows_in": DOCS, "rows_out": DOCS}
    assert corpus["source"] == {"uri": registered.corpus}
    assert corpus["context"] == "corpus"
    # No pipeline run given: a registration run holds the metrics, parameters and corpus.
    assert second["run"]["name"] == "register-index"
    assert second["run"]["metrics"] == {"recall_at_10": 0.95}
    assert second["run"]["params"] == {"k": "10"}
    assert second["run"]["inputs"][0]["source"] == {"uri": "s3://b/c2/"}
    assert second["run"]["inputs"][0]["digest"] != corpus["digest"]
    assert second["aliases"] == ["challenger", "champion"]


def test_registering_the_same_snapshot_again_returns_its_version(registered: Registered) -> None:
    registry = IndexRegistry(registered.uri)
    assert registry.register(registered.first) == registered.v1
    assert len(registry.versions()) == 2


def test_alias_moves_are_read_back_through_the_cli(
    registered: Registered, capsys: pytest.CaptureFixture
) -> None:
    capsys.readouterr()
    assert cli(registered.uri, "history", "--json") == 0
    moves = json.loads(capsys.readouterr().out)
    assert [(m["alias"], m["from"], m["to"], m["why"]) for m in moves] == [
        ("champion", None, registered.v1, "first index"),
        ("challenger", None, registered.v2, "registered"),
        ("champion", registered.v1, registered.v2, "challenger recalls more"),
    ]
    assert all(m["at"] for m in moves)
    assert cli(registered.uri, "history") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["WHEN", "ALIAS", "FROM", "TO", "BY", "WHY"]
    assert table[3].split()[1:4] == ["champion", registered.v1, registered.v2]
    assert table[3].endswith("challenger recalls more")
    assert cli(registered.uri, "list") == 0
    listed = capsys.readouterr().out
    assert "challenger,champion" in listed and registered.second in listed


def test_models_uris_resolve_to_the_recorded_snapshot_directory(registered: Registered) -> None:
    registry = IndexRegistry(registered.uri)
    assert registry.resolve("models:/refinery-index@champion") == registered.second
    assert registry.resolve(f"models:/refinery-index/{registered.v1}") == registered.first
    assert registry.resolve(registered.first) == registered.first
    assert resolve_snapshot("models:/refinery-index@champion", registered.uri) == registered.second
    with pytest.raises(RegistryError, match="alias nightly"):
        registry.resolve("models:/refinery-index@nightly")
    with pytest.raises(RegistryError, match="models:/NAME@ALIAS"):
        registry.resolve("models:/refinery-index")
    assert cli(registered.uri, "alias", "champion", "999", "--why", "no such version") == 1


def test_a_snapshot_published_over_is_refused_not_served(
    registered: Registered, tmp_path: Path
) -> None:
    registry = IndexRegistry(registered.uri, name="refinery-index-replaced")
    directory = snapshot(tmp_path, 100, seed=3)
    version = registry.register(directory)
    snapshot(tmp_path, 100, seed=4)  # the writer publishes a new version over the same folder
    with pytest.raises(RegistryError, match="replaced after registration"):
        registry.resolve(f"models:/refinery-index-replaced/{version}")


def test_search_service_loads_the_champion_by_alias(registered: Registered) -> None:
    limits = LimitsConfig()
    search = SearchService(EmbedService(None, limits), limits)

    async def scenario() -> tuple[dict, dict]:
        config = {"snapshot": "models:/refinery-index@champion", "registry_uri": registered.uri}
        await search.reconfigure(config, canary=f"models:/refinery-index/{registered.v1}")
        body = SearchRequest(vectors=[vectors(2)[3].tolist()], k=1)  # its own neighbour
        return await search.answer(body), search.describe()

    answer, described = asyncio.run(scenario())
    assert answer["results"][0][0]["id"] == 503  # a row of the champion: the second snapshot
    assert described["snapshot"] == registered.second
    assert described["canary"]["snapshot"] == registered.first


def test_an_unreachable_registry_says_where(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(RegistryUnreachable, match=f"MLflow at {uri}"):
        IndexRegistry(uri).versions()
    with pytest.raises(RegistryUnreachable, match=f"MLflow at {uri}"):
        resolve_snapshot("models:/refinery-index@champion", uri)
    capsys.readouterr()
    assert cli(uri, "history") == 2
    assert uri in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RegistryError, match="index.registry_uri"):
        resolve_snapshot("models:/refinery-index@champion")
