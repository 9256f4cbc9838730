"""Canary traffic splits on the real Serve app, deployed from its config as `serve deploy` does:
two index versions in the same ingress replica, the measured split against the weight, sticky
keys, the tester's forced arm, and weights changed live under load with no failed request and
no replica restarted."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serve_helpers import write_snapshot

from serve.config import CanaryConfig

pytestmark = pytest.mark.slow

APP = "canary"
PREFIX = "/canary"
STABLE_FIRST_ID, CANARY_FIRST_ID = 100, 500  # the same documents under other ids


@pytest.fixture(scope="module")
def app(served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from ray import serve

    from serve.deploy import deploy_applications, wait_running

    root = tmp_path_factory.mktemp("canary")
    stable, vectors = write_snapshot(root / "stable", first_id=STABLE_FIRST_ID)
    canary, _ = write_snapshot(root / "canary", first_id=CANARY_FIRST_ID)
    args = {
        "version": "v1",
        "api_keys": [],  # no key: each request without X-Route-Key draws its own arm
        "index": {"snapshot": str(stable)},
        "canary": {"version": "v2", "snapshot": str(canary), "weight": 30},
        "ingress": {"num_replicas": 1, "num_cpus": 0},
        "embedding": {"num_cpus": 0},
        # Every request comes from one caller: a rate limit it never reaches.
        "limits": {"requests_per_s": 100_000, "burst": 100_000},
    }
    config = {"name": APP, "route_prefix": PREFIX, "import_path": "serve.app:build", "args": args}
    deploy_applications([config], keep_others=True)
    assert wait_running([APP], timeout_s=300) == {}
    try:
        yield {"url": served["url"] + PREFIX, "vector": vectors[0].tolist(), "canary": canary}
    finally:
        serve.delete(APP)


async def search_many(
    app: dict, count: int, headers: list[dict[str, str]] | None = None, concurrency: int = 16
) -> list[httpx.Response]:
    """`count` searches for the first document, `concurrency` at a time; headers[i] per request."""
    body = {"vectors": [app["vector"]], "k": 1}
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=app["url"], timeout=60) as client:

        async def one(i: int) -> httpx.Response:
            async with limit:
                return await client.post("/v1/search", json=body, headers=headers and headers[i])

        return await asyncio.gather(*(one(i) for i in range(count)))


def arm_of(response: httpx.Response) -> str:
    """The arm by the header and, independently, by the id that answered."""
    assert response.status_code == 200, response.text
    top = response.json()["results"][0][0]["id"]
    arm = {STABLE_FIRST_ID: "stable", CANARY_FIRST_ID: "canary"}[top]
    assert (
        response.headers["X-Refinery-Version"]
        == {"stable": "stable/v1", "canary": "canary/v2"}[arm]
    )
    return arm


def test_the_measured_split_is_the_weight(app: dict) -> None:
    # Drawn per request: 5,000 keep a 3-point miss over 4 standard deviations away.
    arms = Counter(arm_of(r) for r in asyncio.run(search_many(app, 5000)))
    assert abs(arms["canary"] / 5000 - 0.30) <= 0.03, arms


def test_a_key_sticks_to_its_arm_and_keys_split_by_the_weight(app: dict) -> None:
    keys = [f"user-{i}" for i in range(2000)]
    headers = [{"X-Route-Key": key} for key in keys for _ in range(2)]
    responses = asyncio.run(search_many(app, len(headers), headers))
    by_key: dict[str, set[str]] = {}
    for header, response in zip(headers, responses, strict=True):
        by_key.setdefault(header["X-Route-Key"], set()).add(arm_of(response))
    assert all(len(seen) == 1 for seen in by_key.values())
    assert abs(sum(seen == {"canary"} for seen in by_key.values()) / 2000 - 0.30) <= 0.03


def test_testers_force_an_arm(app: dict) -> None:
    for arm in ("stable", "canary"):
        responses = asyncio.run(search_many(app, 40, [{"X-Refinery-Arm": arm}] * 40))
        assert {arm_of(r) for r in responses} == {arm}
    bad = httpx.post(
        app["url"] + "/v1/search",
        json={"vectors": [app["vector"]], "k": 1},
        headers={"X-Refinery-Arm": "blue"},
    )
    assert bad.status_code == 400 and "X-Refinery-Arm" in bad.json()["error"]["message"]


def test_weights_change_live_under_load_with_no_failed_request(app: dict) -> None:
    from serve.canary.deploy import current_routing, set_canary

    async def load_while(stop: asyncio.Event) -> list[httpx.Response]:
        responses: list[httpx.Response] = []
        while not stop.is_set():
            responses += await search_many(app, 32, concurrency=8)
        return responses

    async def change_weights() -> tuple[list[httpx.Response], list[Counter]]:
        stop = asyncio.Event()
        load = asyncio.create_task(load_while(stop))
        seen = []
        for weight in (0, 100, 60):
            canary = CanaryConfig(version="v2", snapshot=str(app["canary"]), weight=weight)
            await asyncio.to_thread(set_canary, APP, canary)
            await wait_for_weight(app, weight)
            seen.append(Counter(arm_of(r) for r in await search_many(app, 200)))
        stop.set()
        return await load, seen

    replicas_before = replicas(app)
    responses, seen = asyncio.run(change_weights())
    assert {r.status_code for r in responses} == {200}, Counter(r.status_code for r in responses)
    assert seen[0] == Counter(stable=200) and seen[1] == Counter(canary=200)
    assert abs(seen[2]["canary"] / 200 - 0.6) <= 0.12
    assert replicas(app) == replicas_before  # reconfigured in place: no replica restarted
    assert current_routing(APP).canary.weight == 60


async def wait_for_weight(app: dict, weight: int, timeout_s: float = 60) -> None:
    """Until the replica reports the weight (set_canary returns once the controller has it)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=app["url"], timeout=30) as client:
        while time.monotonic() < deadline:
            ready = (await client.get("/readyz")).json()
            if (ready.get("routing") or {}).get("canary", {}).get("weight") == weight:
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"weight {weight} not applied within {timeout_s} s")


def replicas(app: dict) -> set[str]:
    responses = asyncio.run(search_many(app, 20))
    return {r.headers["X-Refinery-Replica"] for r in responses}


def test_the_app_must_come_from_a_config_to_change_live(served: dict[str, Any]) -> None:
    from serve.canary.deploy import NotDeclarative, set_canary

    with pytest.raises(NotDeclarative, match="deployed with serve.run"):
        set_canary("refinery-test", None)  # the shared app: serve.run() from Python
