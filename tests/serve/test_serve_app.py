"""The Serve application's search, embed and update endpoints, called over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from serve_helpers import AUTH, DOCS, KEY, post

from refinery.manifest import Manifest
from serve.protocol import SearchResponse


def test_health_and_readiness(served: dict[str, Any]) -> None:
    health = httpx.get(served["url"] + "/healthz")
    assert health.status_code == 200 and health.headers["X-Refinery-Version"] == "stable/test-1"
    ready = httpx.get(served["url"] + "/readyz", timeout=60).json()
    assert ready["status"] == "ready"
    assert ready["index"]["dimension"] == 384 and ready["index"]["count"] == len(DOCS)


def test_vector_search_equals_the_index_searched_directly(served: dict[str, Any]) -> None:
    import vectorindex

    queries = served["vectors"][[0, 3, 6]] + np.float32(0.01)
    index = vectorindex.load(Manifest.read(str(served["snapshot"])).index)
    expected_scores, expected_ids = index.search(np.ascontiguousarray(queries), 5)
    response = post(served, "/v1/search", {"vectors": queries.tolist(), "k": 5})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [[hit["id"] for hit in row] for row in results] == expected_ids.tolist()
    got_scores = np.array([[hit["score"] for hit in row] for row in results])
    np.testing.assert_allclose(got_scores, expected_scores, rtol=1e-5)
    assert results[0][0]["payload"]["id"] == "paris"
    # Exactly the documented shape: no field more or less than the typed response has.
    assert SearchResponse.model_validate(response.json()).model_dump() == response.json()


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
        ({"texts": ["x" * 70000]}, 413, "exceeds the limit of 65536 bytes"),
        ({"texts": ["x"], "filter": {"topic": 1}}, 400, "'topic': 1 does not fit the column's"),
        ({"texts": ["x"], "filter": {"topic": []}}, 400, "field 'topic' has an empty list"),
    ],
)
def test_client_mistakes_are_4xx_with_a_message(
    served: dict[str, Any], body: dict, status: int, message: str
) -> None:
    response = post(served, "/v1/search", body)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    assert response.headers["X-Refinery-Version"] == "stable/test-1"


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


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        # compare_digest refused the non-ASCII token: a TypeError, once a 500.
        ("Bearer sécret".encode(), "invalid API key"),
        (f"Bearer {KEY}é".encode(), "invalid API key"),
        # Once accepted, with a bucket of its own: a way around the rate limit.
        (f"Bearer  {KEY}".encode(), "invalid API key"),
        (f"Bearer\t{KEY}".encode(), "missing 'Authorization: Bearer <key>' header"),
    ],
)
def test_malformed_keys_are_401(served: dict[str, Any], authorization: bytes, message: str) -> None:
    response = post(
        served, "/v1/search", {"texts": ["x"]}, headers={"Authorization": authorization}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == {"type": "authentication_error", "message": message}


def test_a_chunked_body_is_read_no_further_than_the_limit(served: dict[str, Any]) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:  # 64 MiB, with no Content-Length
        nonlocal sent
        for _ in range(1024):
            sent += 1
            yield b" " * 65536

    response = httpx.post(served["url"] + "/v1/search", content=chunks(), headers=AUTH, timeout=60)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["message"] == "body exceeds the limit of 65536 bytes"


def test_concurrent_queries_are_batched(served: dict[str, Any]) -> None:
    def counts() -> tuple[int, int]:
        # The app has one ingress replica: its /readyz describes the index that answers.
        described = httpx.get(served["url"] + "/readyz", timeout=60).json()["index"]
        return described["batches"], described["batched_queries"]

    async def load() -> list[int]:
        async with httpx.AsyncClient(base_url=served["url"], headers=AUTH, timeout=60) as client:
            bodies = [{"vectors": [row.tolist()], "k": 3} for row in served["vectors"]] * 8
            responses = await asyncio.gather(*(client.post("/v1/search", json=b) for b in bodies))
        return [r.status_code for r in responses]

    batches, queries = counts()
    assert set(asyncio.run(load())) == {200}
    more_batches, more_queries = counts()
    assert more_queries - queries == 8 * len(DOCS)
    # This load's own batches held more than one query each on average: a lifetime maximum
    # would count what earlier tests' requests did.
    assert more_batches - batches < more_queries - queries
