"""An application served without API keys, on its own snapshot (so it may delete every vector),
over real HTTP: callers are rate-limited per address, an emptied index answers with no hits,
and a NaN payload value goes out as null."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from serve_helpers import DOCS, write_snapshot

BURST = 5
PREFIX = "/open"


@pytest.fixture(scope="module")
def open_app(served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from ray import serve

    from serve.app import build

    weights = [math.nan if i == 0 else float(i) for i in range(len(DOCS))]
    snapshot, vectors = write_snapshot(tmp_path_factory.mktemp("open"), extra={"weight": weights})
    args = {
        "version": "open",
        "index": {"snapshot": str(snapshot)},
        # A bucket that never refills within a test: the (BURST + 1)th request is refused.
        "limits": {"requests_per_s": 0.001, "burst": BURST},
    }
    serve.run(build(args), name="open", route_prefix=PREFIX)
    try:
        yield {"port": served["port"], "vectors": vectors}
    finally:
        serve.delete("open")


def client(app: dict, address: str) -> httpx.Client:
    """A client from its own loopback address: each test is a caller of its own."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(
        base_url=f"http://127.0.0.1:{app['port']}{PREFIX}", transport=transport, timeout=60
    )


def strict_json(response: httpx.Response) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(response.content, parse_constant=refuse)


def test_without_keys_each_address_has_its_own_rate_limit(open_app: dict) -> None:
    with client(open_app, "127.0.0.2") as first, client(open_app, "127.0.0.3") as second:
        # No LLM here: /v1/models answers 404, after the rate limit has taken its token.
        assert [first.get("/v1/models").status_code for _ in range(BURST)] == [404] * BURST
        refused = first.get("/v1/models")
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert second.get("/v1/models").status_code == 404


def test_nan_in_a_payload_goes_out_as_null(open_app: dict) -> None:
    with client(open_app, "127.0.0.4") as caller:
        query = {"vectors": [open_app["vectors"][0].tolist()], "k": 2}
        response = caller.post("/v1/search", json=query)
    assert response.status_code == 200, response.text
    [hits] = strict_json(response)["results"]
    assert hits[0]["payload"]["id"] == DOCS[0][0] and hits[0]["payload"]["weight"] is None
    assert isinstance(hits[1]["payload"]["weight"], float)


def test_a_search_after_every_vector_is_deleted_has_no_hits(open_app: dict) -> None:
    ids = list(range(100, 100 + len(DOCS)))
    with client(open_app, "127.0.0.5") as caller:
        deleted = caller.post("/v1/delete", json={"ids": ids})
        assert deleted.status_code == 200 and deleted.json()["count"] == 0, deleted.text
        query = {"vectors": [np.ones(384).tolist()], "k": 3}
        assert caller.post("/v1/search", json=query).json() == {"results": [[]]}
        filtered = caller.post("/v1/search", json={**query, "filter": {"topic": "code"}})
        assert filtered.status_code == 200 and filtered.json() == {"results": [[]]}
