"""Canary traffic splits on the real Serve app, deployed from its config as `serve deploy` does:
two index versions in the same ingress replica, the measured split against the weight, sticky
keys, the tester's forced arm, and weights changed live under load with no failed request and
no replica restarted."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from canary_helpers import (
    BackgroundLoad,
    fresh_controller,
    rollout_status,
    wait_for_routing,
    wait_status,
)
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
    # Six of the eight documents as in stable, two under new ids: a known disagreement.
    partial, _ = write_snapshot(root / "partial", ids=[*range(100, 106), 900, 901])
    # The same documents under the same ids, as a reindex of an unchanged corpus writes them:
    # the canary of a rollout, which the shadow agreement gate lets through.
    twin, _ = write_snapshot(root / "twin", first_id=STABLE_FIRST_ID)
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
        yield {
            "url": served["url"] + PREFIX,
            "vector": vectors[0].tolist(),
            "vectors": vectors,
            "stable": stable,
            "canary": canary,
            "partial": partial,
            "twin": twin,
        }
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
    await wait_for_canary(app, weight, timeout_s)


def replicas(app: dict) -> set[str]:
    responses = asyncio.run(search_many(app, 20))
    return {r.headers["X-Refinery-Replica"] for r in responses}


def test_the_app_must_come_from_a_config_to_change_live(served: dict[str, Any]) -> None:
    from serve.canary.deploy import NotDeclarative, set_canary

    with pytest.raises(NotDeclarative, match="deployed with serve.run"):
        set_canary("refinery-test", None)  # the shared app: serve.run() from Python


# --- rollouts, run by the application's controller in the cluster ------------------------------


@pytest.fixture
def controller(app: dict, tmp_path: Path) -> Iterator[Any]:
    """A fresh controller with its own state; stable v1 alone again afterwards."""
    restore = {"version": "v1", "index": {"snapshot": str(app["stable"])}}
    with fresh_controller(APP, tmp_path, restore) as handle:
        yield handle


def search_load(app: dict) -> BackgroundLoad:
    return BackgroundLoad(lambda: search_many(app, 16, concurrency=4))


def served_by(app: dict, count: int = 40) -> Counter:
    return Counter(
        (arm_of_id(r), r.headers["X-Refinery-Version"])
        for r in asyncio.run(search_many(app, count))
    )


def arm_of_id(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return response.json()["results"][0][0]["id"]


def test_a_healthy_canary_is_promoted_and_can_be_rolled_back(
    app: dict, controller: Any, tmp_path: Path
) -> None:
    import ray

    config = {"steps": [20, 100], "interval_s": 1, "min_requests": 20, "shadow": 0.5}
    with search_load(app) as load:
        ray.get(controller.rollout.remote("v3", str(app["twin"]), config))
        status = rollout_status(controller, "promoted")
        asyncio.run(wait_for_version(app, "v3"))
    assert set(load.statuses) == {200}, load.statuses
    assert [e["kind"] for e in status["rollout"]["history"]] == [
        "step", "gate", "step", "gate", "promote"
    ]  # fmt: skip
    assert served_by(app) == Counter({(STABLE_FIRST_ID, "stable/v3"): 40})
    assert status["shadow"]["agreement"]["v1 -> v3"]["overlap_at_10"] == 1.0

    ray.get(controller.rollback.remote())
    asyncio.run(wait_for_version(app, "v1"))
    assert served_by(app) == Counter({(STABLE_FIRST_ID, "stable/v1"): 40})

    # The rollout is an MLflow run: its weights event by event, its gates, its outcome.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = status["rollout"]["run_id"]
    run = client.get_run(run_id)
    assert run.data.tags["outcome"] == "rolled_back" and run.data.params["to"] == "v3"
    weights = sorted(client.get_metric_history(run_id, "weight"), key=lambda m: m.step)
    assert [m.value for m in weights] == [20, 20, 100, 100, 100, 0]
    assert "gate.error_rate" in run.data.metrics


@pytest.mark.parametrize(
    ("fault", "gates", "failed_gate"),
    [
        ({"abort_percent": 30}, {}, "error"),
        ({"delay_percent": 100, "delay_s": 0.3}, {"max_p99_s": 0.2}, "p99_s"),
    ],
    ids=["errors", "latency"],
)
def test_a_faulty_canary_is_rolled_back_within_its_first_step(
    app: dict, controller: Any, fault: dict, gates: dict, failed_gate: str
) -> None:
    import ray

    config = {"steps": [50, 100], "interval_s": 30, "min_requests": 20}
    config |= {"gates": gates, "fault": fault}
    started = time.monotonic()
    with search_load(app):
        ray.get(controller.rollout.remote("v3", str(app["twin"]), config))
        status = rollout_status(controller, "rolled_back")
    assert time.monotonic() - started < 30  # within the first step's interval
    rollback = status["rollout"]["history"][-1]
    assert rollback["kind"] == "rollback" and failed_gate in rollback["reason"], rollback
    assert max(e["weight"] for e in status["rollout"]["history"]) == 50  # never past step 1
    asyncio.run(wait_for_canary(app, None))
    assert served_by(app) == Counter({(STABLE_FIRST_ID, "stable/v1"): 40})


def test_a_restarted_controller_resumes_the_rollout_at_its_step(app: dict, controller: Any) -> None:
    import ray

    config = {"steps": [10, 50, 100], "interval_s": 3600, "min_requests": 20}
    ray.get(controller.rollout.remote("v2", str(app["canary"]), config))
    asyncio.run(wait_for_canary(app, 10))
    ray.kill(controller, no_restart=False)  # Ray starts it again; it reloads its state
    status = wait_status(controller, lambda s: s["rollout"] is not None, timeout_s=60)
    rollout = status["rollout"]
    assert (rollout["status"], rollout["step"], rollout["weight"]) == ("running", 0, 10)
    assert status["routing"]["canary"]["weight"] == 10
    ray.get(controller.set_weight.remote(50))  # and it still runs the rollout
    asyncio.run(wait_for_canary(app, 50))


def test_shadow_agreement_between_versions_that_differ_in_a_known_share(
    app: dict, controller: Any
) -> None:
    from serve.canary.deploy import set_canary

    partial = CanaryConfig(version="v4", snapshot=str(app["partial"]), weight=0, shadow=1.0)
    set_canary(APP, partial)
    asyncio.run(wait_for_canary(app, 0))
    bodies = [{"vectors": [vector.tolist()], "k": 8} for vector in app["vectors"]] * 5
    for body in bodies:
        response = httpx.post(app["url"] + "/v1/search", json=body, timeout=30)
        assert response.headers["X-Refinery-Version"] == "stable/v1"

    def agreed(status: dict) -> bool:
        pair = status["shadow"]["agreement"].get("v1 -> v4")
        return pair is not None and pair["pairs"] >= len(bodies)

    summary = wait_status(controller, agreed, timeout_s=60)["shadow"]["agreement"]["v1 -> v4"]
    assert summary["overlap_at_10"] == pytest.approx(6 / 8)
    assert summary["rank_correlation"] == pytest.approx(1.0)


async def wait_for_version(app: dict, version: str, timeout_s: float = 60) -> None:
    await wait_for_routing(app["url"], lambda routing: routing["version"] == version, timeout_s)


async def wait_for_canary(app: dict, weight: int | None, timeout_s: float = 60) -> None:
    def reached(routing: dict) -> bool:
        canary = routing.get("canary")
        return canary is None if weight is None else bool(canary) and canary["weight"] == weight

    await wait_for_routing(app["url"], reached, timeout_s)
