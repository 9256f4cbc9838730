"""The Serve application on the shared local Ray, called over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.config import EmbeddingConfig
from refinery.embedding import load_embedder

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = [
    ("paris", "geography", "Paris is the capital and largest city of France."),
    ("berlin", "geography", "Berlin is the capital of Germany, on the river Spree."),
    ("nile", "geography", "The Nile is a major river flowing north through Egypt."),
    ("python", "code", "Python is a programming language that lets you work quickly."),
    ("rust", "code", "Rust guarantees memory safety without a garbage collector."),
    ("ray", "code", "Ray scales Python applications from a laptop to a cluster."),
    ("bread", "food", "Bread is made by baking a dough of flour and water."),
    ("tea", "food", "Green tea is brewed from unoxidised leaves of the tea plant."),
]


def write_snapshot(root: Path) -> tuple[Path, np.ndarray]:
    """A snapshot as the document pipeline writes it: Parquet documents, index, manifest."""
    import vectorindex

    vectors = (
        load_embedder(EmbeddingConfig())
        .encode([text for _, _, text in DOCS], normalize_embeddings=True)
        .astype(np.float32)
    )
    ids = np.arange(100, 100 + len(DOCS), dtype=np.int64)
    (root / "documents").mkdir(parents=True)
    (root / "index").mkdir()
    table = pa.table(
        {
            "id": [name for name, _, _ in DOCS],
            "index_id": ids,
            "topic": [topic for _, topic, _ in DOCS],
            "text": [text for _, _, text in DOCS],
            "vector": list(vectors),
        }
    )
    pq.write_table(table, root / "documents" / "part-0.parquet")
    index = vectorindex.IndexFlatIP(vectors.shape[1])
    index.add_with_ids(vectors, ids)
    index.save(str(root / "index" / "index.bin"))
    manifest = {
        "model": "all-MiniLM-L6-v2",
        "dimension": int(vectors.shape[1]),
        "metric": "ip",
        "count": len(DOCS),
        "index": str(root / "index" / "index.bin"),
        "documents": str(root / "documents"),
    }
    (root / "index" / "manifest.json").write_text(json.dumps(manifest))
    return root / "index", vectors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ray import serve

    from serve.app import build

    snapshot, vectors = write_snapshot(tmp_path_factory.mktemp("snapshot"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "version": "test-1",
        "api_keys": [KEY],
        "index": {"snapshot": str(snapshot), "batching": {"max_batch_size": 64}},
        "limits": {"max_k": 50, "max_body_bytes": 65536},
    }
    serve.run(build(args), name="refinery-test", route_prefix="/")
    try:
        yield {"url": f"http://127.0.0.1:{port}", "vectors": vectors, "snapshot": snapshot}
    finally:
        serve.delete("refinery-test")
        serve.shutdown()


def post(
    served: dict[str, Any], path: str, body: Any, headers: dict | None = None
) -> httpx.Response:
    return httpx.post(
        served["url"] + path, json=body, headers=AUTH if headers is None else headers, timeout=60
    )


def test_health_and_readiness(served: dict[str, Any]) -> None:
    health = httpx.get(served["url"] + "/healthz")
    assert health.status_code == 200 and health.headers["X-Refinery-Version"] == "test-1"
    ready = httpx.get(served["url"] + "/readyz", timeout=60).json()
    assert ready["status"] == "ready"
    assert ready["index"]["dimension"] == 384 and ready["index"]["count"] == len(DOCS)


def test_vector_search_equals_the_index_searched_directly(served: dict[str, Any]) -> None:
    import vectorindex

    queries = served["vectors"][[0, 3, 6]] + np.float32(0.01)
    index = vectorindex.load(str(served["snapshot"] / "index.bin"))
    expected_scores, expected_ids = index.search(np.ascontiguousarray(queries), 5)
    response = post(served, "/v1/search", {"vectors": queries.tolist(), "k": 5})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [[hit["id"] for hit in row] for row in results] == expected_ids.tolist()
    got_scores = np.array([[hit["score"] for hit in row] for row in results])
    np.testing.assert_allclose(got_scores, expected_scores, rtol=1e-5)
    assert results[0][0]["payload"]["id"] == "paris"


def test_text_search_and_payload_filter(served: dict[str, Any]) -> None:
    response = post(served, "/v1/search", {"texts": ["Which city is France's capital?"], "k": 3})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0][0]["payload"]["id"] == "paris"
    body = {
        "texts": ["memory safety without garbage collection"],
        "k": 5,
        "filter": {"topic": "code"},
    }
    hits = post(served, "/v1/search", body).json()["results"][0]
    assert len(hits) == 3 and {hit["payload"]["topic"] for hit in hits} == {"code"}
    assert hits[0]["payload"]["id"] == "rust"


def test_embed_matches_the_model(served: dict[str, Any]) -> None:
    response = post(served, "/v1/embed", {"texts": [DOCS[0][2], DOCS[4][2]]})
    body = response.json()
    assert body["dim"] == 384 and body["model"] == "all-MiniLM-L6-v2"
    np.testing.assert_allclose(np.array(body["vectors"]), served["vectors"][[0, 4]], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"vectors": [[0.1] * 383]}, 400, "dimension 383; the index has dimension 384"),
        ({"texts": ["x"], "k": 51}, 400, "k=51 exceeds the limit of 50"),
        ({"texts": ["  "]}, 400, "texts[0] is empty"),
        ({"texts": ["x"], "filter": {"colour": "red"}}, 400, "unknown filter field(s) colour"),
        ({"texts": ["x" * 70000]}, 413, "exceeds 65536"),
    ],
)
def test_client_mistakes_are_4xx_with_a_message(
    served: dict[str, Any], body: dict, status: int, message: str
) -> None:
    response = post(served, "/v1/search", body)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    assert response.headers["X-Refinery-Version"] == "test-1"


def test_malformed_json_and_missing_key(served: dict[str, Any]) -> None:
    raw = httpx.post(served["url"] + "/v1/search", content=b"{oops", headers=AUTH)
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    nan = b'{"vectors": [[' + b", ".join([b"0.1"] * 383 + [b"NaN"]) + b"]]}"
    not_finite = httpx.post(served["url"] + "/v1/search", content=nan, headers=AUTH)
    assert not_finite.status_code == 400
    assert "vectors[0] holds NaN or infinity" in not_finite.json()["error"]["message"]
    anonymous = post(served, "/v1/search", {"texts": ["x"]}, headers={})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"


def test_concurrent_queries_are_batched(served: dict[str, Any]) -> None:
    from ray import serve

    async def load() -> list[int]:
        async with httpx.AsyncClient(base_url=served["url"], headers=AUTH, timeout=60) as client:
            bodies = [{"vectors": [row.tolist()], "k": 3} for row in served["vectors"]] * 8
            responses = await asyncio.gather(*(client.post("/v1/search", json=b) for b in bodies))
        return [r.status_code for r in responses]

    assert set(asyncio.run(load())) == {200}
    handle = serve.get_deployment_handle("IndexDeployment", app_name="refinery-test")
    assert handle.describe.remote().result()["largest_batch"] > 1
