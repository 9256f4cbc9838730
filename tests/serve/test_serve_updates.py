"""Real-time index updates over HTTP, and a snapshot switch under load that drops no request."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_helpers import AUTH, post, write_snapshot


def search_ids(served: dict[str, Any], query: dict, k: int = 3) -> list[Any]:
    response = post(served, "/v1/search", {**query, "k": k})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"][0]]


def test_upsert_by_text_and_vector_then_delete(served: dict[str, Any]) -> None:
    items = [
        {"id": 900, "text": "Volcanoes erupt molten lava and ash.", "payload": {"topic": "geo"}},
        {"id": 901, "vector": (served["vectors"][3] * -1).tolist(), "payload": {"text": "anti"}},
    ]
    response = post(served, "/v1/upsert", {"items": items})
    assert response.status_code == 200, response.text
    assert response.json()["upserted"] == 2
    assert search_ids(served, {"texts": ["lava from a volcano"]}, k=1) == [900]
    assert search_ids(served, {"vectors": [items[1]["vector"]]}, k=1) == [901]
    filtered = post(served, "/v1/search", {"texts": ["lava"], "k": 5, "filter": {"topic": "geo"}})
    assert [hit["id"] for hit in filtered.json()["results"][0]] == [900]

    deleted = post(served, "/v1/delete", {"ids": [900, 901, 12345]}).json()
    assert deleted["deleted"] == 2
    assert 900 not in search_ids(served, {"texts": ["lava from a volcano"]}, k=10)


def test_update_mistakes_are_4xx(served: dict[str, Any]) -> None:
    cases = [
        ({"items": [{"id": 1, "text": "x", "payload": {"colour": "red"}}]}, "colour"),
        ({"items": [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}]}, "unique"),
        ({"items": [{"id": 1, "vector": [0.5] * 3}]}, "items[].vector[0] has dimension 3"),
        ({"items": [{"id": 1}]}, "give a 'vector' or a non-empty 'text'"),
        ({"items": []}, "items"),
        (
            {"items": [{"id": 2**63, "text": "x"}]},
            "items.0.id: Input should be less than or equal to 9223372036854775807",
        ),
        ({"items": [{"id": 1, "text": "x", "payload": {"topic": 7}}]}, "does not match"),
    ]
    for body, message in cases:
        response = post(served, "/v1/upsert", body)
        assert response.status_code == 400, (body, response.text)
        assert message in response.json()["error"]["message"]
    assert post(served, "/v1/delete", {"ids": ["x"]}).status_code == 400
    outside = post(served, "/v1/delete", {"ids": [1, 2**64]})
    assert outside.status_code == 400
    assert "ids.1: Input should be less than or equal to" in outside.json()["error"]["message"]


def test_switching_snapshots_under_load_drops_no_request(
    served: dict[str, Any], tmp_path: Path
) -> None:
    from ray import serve

    from serve.app import build

    first = served["snapshot"]
    second, _ = write_snapshot(tmp_path, first_id=500)
    query = {"vectors": [served["vectors"][0].tolist()], "k": 1}

    def deploy(snapshot: Path) -> None:
        args = {"version": "switch", "index": {"snapshot": str(snapshot)}}
        serve.run(build(args), name="switch", route_prefix="/switch")

    async def load_while_switching() -> tuple[list[int], list[int]]:
        statuses, ids = [], []
        switched = asyncio.create_task(asyncio.to_thread(deploy, second))
        async with httpx.AsyncClient(base_url=served["url"], headers=AUTH, timeout=60) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (switched.done() and ids[-1:] == [500]):
                batch = await asyncio.gather(
                    *(client.post("/switch/v1/search", json=query) for _ in range(4))
                )
                statuses += [r.status_code for r in batch]
                ids += [r.json()["results"][0][0]["id"] for r in batch if r.status_code == 200]
        await switched
        return statuses, ids

    deploy(first)
    try:
        statuses, ids = asyncio.run(load_while_switching())
    finally:
        serve.delete("switch")
    assert set(statuses) == {200}
    assert ids[0] == 100 and ids[-1] == 500
    assert np.all(np.diff([i == 500 for i in ids]) >= 0)  # never back to the old snapshot
