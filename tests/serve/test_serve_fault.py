"""An embedder replica killed for real under load, through real HTTP, with the index searched in
two ingress replicas: no search or embedding fails (the ingress sends the embedder's calls again
to the surviving replica), and Serve brings the embedder back to its replica count.

The ingress replicas are not killed: one that dies loses the HTTP requests it holds, which no
Serve component can send again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from serve_helpers import DOCS, write_snapshot

pytestmark = pytest.mark.slow

APP = "fault"
PREFIX = "/fault"
REPLICAS = 2
KILLED = "EmbedderDeployment"
CLIENTS = 6
REQUESTS = 300
KILL_AFTER = 80
FIRST_ID = 100


@pytest.fixture(scope="module")
def fault_app(served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from ray import serve

    from serve.app import build

    snapshot, vectors = write_snapshot(tmp_path_factory.mktemp("fault"), first_id=FIRST_ID)
    args = {
        "version": "fault",
        "index": {"snapshot": str(snapshot)},
        # serve.app:build runs one replica of each by default; surviving a loss takes two.
        "ingress": {"num_replicas": REPLICAS},
        "embedding": {"num_replicas": REPLICAS},
        # One caller sends every request here: a rate limit it never reaches.
        "limits": {"requests_per_s": 10_000, "burst": 10_000},
        # A batch window keeps each embedder call in flight a while, so that a kill cuts some.
        "embedding_batching": {"max_batch_size": 64, "batch_wait_timeout_s": 0.05},
    }
    serve.run(build(args), name=APP, route_prefix=PREFIX)
    try:
        yield {"url": f"{served['url']}{PREFIX}", "vectors": vectors}
    finally:
        serve.delete(APP)


def replica_actors(deployment: str) -> list[str]:
    """Names of the deployment's live replica actors in this app (Serve's namespace)."""
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(actor["name"] for actor in named if actor["name"].startswith(prefix))


def kill_a_busy_replica(deployment: str) -> str:
    """Kills a replica of the deployment while it holds requests (as its Serve replica actor
    counts them): an idle replica's death would test nothing but Serve's routing."""
    import ray

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for name in replica_actors(deployment):
            actor = ray.get_actor(name, namespace="serve")
            if ray.get(actor.get_num_ongoing_requests.remote()) > 0:
                ray.kill(actor, no_restart=True)
                return name
    raise AssertionError(f"no {deployment} replica held a request for 10 s")


def replaced(deployment: str, killed: str) -> bool:
    """Whether Serve runs the deployment's replica count again, without the killed one (the
    status may count a replica as running until the controller sees it died)."""
    from ray import serve

    status = serve.status().applications[APP].deployments[deployment]
    replicas = replica_actors(deployment)
    running = status.replica_states.get("RUNNING", 0)
    return running == len(replicas) == REPLICAS and killed not in replicas


def request(number: int, vectors: np.ndarray) -> tuple[str, dict, Any]:
    """The number-th request of the load (a vector search, a text search or an embedding) and
    what its answer must hold: the document's own id first, or its own vector."""
    doc = number % len(DOCS)
    text = DOCS[doc][2]
    kind = number % 3
    if kind == 0:
        return "/v1/search", {"vectors": [vectors[doc].tolist()], "k": 3}, FIRST_ID + doc
    if kind == 1:
        return "/v1/search", {"texts": [text], "k": 3}, FIRST_ID + doc
    return "/v1/embed", {"texts": [text]}, vectors[doc]


def failure(response: httpx.Response, expected: Any) -> str | None:
    """Why the answer is wrong; None when it is right."""
    if response.status_code != 200:
        return f"{response.status_code} {response.text}"
    body = response.json()
    if "results" in body:
        top = body["results"][0][0]["id"]
        return None if top == expected else f"top hit {top}, expected {expected}"
    vector = np.asarray(body["vectors"][0], dtype=np.float32)
    cosine = float(vector @ expected / np.linalg.norm(vector) / np.linalg.norm(expected))
    return None if cosine > 0.999 else f"embedding off its document's (cosine {cosine:.4f})"


async def load_with_kill(app: dict) -> tuple[list[str], list[str], int]:
    """REQUESTS requests from CLIENTS concurrent clients; after KILL_AFTER have been answered
    a busy embedder replica is killed. The failures, the killed replica, and how many requests
    were answered after the kill."""
    failures: list[str] = []
    answered = 0
    killed: list[str] = []
    after_kill = 0
    numbers = iter(range(REQUESTS))
    kill_time = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal answered, after_kill
        for number in numbers:
            path, body, expected = request(number, app["vectors"])
            response = await http.post(path, json=body)
            reason = failure(response, expected)
            if reason:
                failures.append(f"{path} {body.get('texts') or 'vector'}: {reason}")
            answered += 1
            after_kill += bool(killed)
            if answered == KILL_AFTER:
                kill_time.set()

    async def killer() -> None:
        await kill_time.wait()
        killed.append(await asyncio.to_thread(kill_a_busy_replica, KILLED))

    async with httpx.AsyncClient(base_url=app["url"], timeout=60) as http:
        await asyncio.gather(killer(), *(client(http) for _ in range(CLIENTS)))
    return failures, killed, after_kill


def test_killing_an_embedder_replica_under_load_fails_no_search_or_embedding(
    fault_app: dict,
) -> None:
    for deployment in ("Ingress", KILLED):
        assert len(replica_actors(deployment)) == REPLICAS

    started = time.monotonic()
    failures, killed, after_kill = asyncio.run(load_with_kill(fault_app))
    elapsed = time.monotonic() - started

    assert len(killed) == 1
    assert after_kill >= REQUESTS // 2, f"only {after_kill} requests after the kill"
    assert failures == [], f"{len(failures)} of {REQUESTS} failed: {failures[:5]}"
    print(f"{REQUESTS} requests in {elapsed:.1f} s, {after_kill} after the kill: none failed")

    load_ended = time.monotonic()
    while not replaced(KILLED, killed[0]):
        assert time.monotonic() < load_ended + 90, replica_actors(KILLED)
        time.sleep(0.5)
    waited = time.monotonic() - load_ended
    print(f"the embedder back to {REPLICAS} replicas {waited:.1f} s after the load")
    assert len(replica_actors("Ingress")) == REPLICAS
