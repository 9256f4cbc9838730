"""LLM arms of a canary on the real Serve app: two vLLM CPU deployments (two tiny models that
differ in their random weights, so their greedy answers differ), clients naming the
application's model either way. The split and the forced arm, tokens and streams counted per
arm, greedy shadows compared, and a rollout that promotes the new model and rolls it back."""

from __future__ import annotations

import asyncio
import time
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
from serve_helpers import MODEL_ID, write_snapshot

from refinery.tinyllm import build_tiny_llama
from serve.config import CanaryConfig

pytestmark = pytest.mark.slow

APP = "canary-llm"
PREFIX = "/canary-llm"
NEXT_ID = "tiny-test-next"  # the successor model, another deployment of the same application
GREEDY = {"temperature": 0.0, "max_tokens": 6}
MESSAGES = [{"role": "user", "content": "What does Refinery do?"}]


@pytest.fixture(scope="module")
def app(
    served: dict[str, Any], tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    from ray import serve

    from serve.deploy import deploy_applications, wait_running

    root = tmp_path_factory.mktemp("canary-llm")
    successor = build_tiny_llama(root / "tiny-next", seed=1)
    snapshot, _ = write_snapshot(root / "stable")
    engine = {"max_model_len": 256, "gpu_memory_utilization": 0.05}
    args = {
        "version": "v1",
        "index": {"snapshot": str(snapshot)},
        "llm": {"model": str(tiny_llm_dir), "model_id": MODEL_ID, **engine},
        "llm_arms": [{"model": str(successor), "model_id": NEXT_ID, **engine}],
        "ingress": {"num_replicas": 1, "num_cpus": 0},
        "embedding": {"num_cpus": 0},
        "rag": {"k": 2, "max_tokens": 6},
        "limits": {"requests_per_s": 100_000, "burst": 100_000},
    }
    config = {"name": APP, "route_prefix": PREFIX, "import_path": "serve.app:build", "args": args}
    deploy_applications([config], keep_others=True)
    assert wait_running([APP], timeout_s=300) == {}
    try:
        yield {"url": served["url"] + PREFIX}
    finally:
        serve.delete(APP)


@pytest.fixture
def controller(app: dict, tmp_path: Path) -> Iterator[Any]:
    with fresh_controller(APP, tmp_path, {"version": "v1", "llm": MODEL_ID}) as handle:
        yield handle


def set_llm_canary(app: dict, weight: int, shadow: float = 0.0) -> None:
    from serve.canary.deploy import set_canary

    set_canary(APP, CanaryConfig(version="v2", llm=NEXT_ID, weight=weight, shadow=shadow))
    asyncio.run(
        wait_for_routing(app["url"], lambda r: (r.get("canary") or {}).get("weight") == weight)
    )


def chat(app: dict, headers: dict | None = None, **extra: Any) -> httpx.Response:
    body = {"model": MODEL_ID, "messages": MESSAGES, **GREEDY, **extra}
    return httpx.post(app["url"] + "/v1/chat/completions", json=body, headers=headers, timeout=120)


def arm_of(response: httpx.Response) -> str:
    """The arm by the header and, independently, by the model that answered."""
    assert response.status_code == 200, response.text
    arm = {MODEL_ID: "stable", NEXT_ID: "canary"}[response.json()["model"]]
    version = {"stable": "stable/v1", "canary": "canary/v2"}[arm]
    assert response.headers["X-Refinery-Version"] == version
    return arm


def stream_events(app: dict, headers: dict, **extra: Any) -> tuple[httpx.Headers, list[str]]:
    body = {"model": MODEL_ID, "messages": MESSAGES, "stream": True, **GREEDY, **extra}
    with httpx.stream(
        "POST", app["url"] + "/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
        return response.headers, events


def test_the_llm_arms_answer_by_weight_key_and_forced_arm(app: dict) -> None:
    set_llm_canary(app, 0)
    assert {arm_of(chat(app)) for _ in range(4)} == {"stable"}
    assert arm_of(chat(app, {"X-Refinery-Arm": "canary"})) == "canary"
    # A client may name either deployment's model: the arm decides which one answers.
    assert arm_of(chat(app, {"X-Refinery-Arm": "stable"}, model=NEXT_ID)) == "stable"
    missing = chat(app, model="no-such-model")
    assert missing.status_code == 404 and "no-such-model" in missing.json()["error"]["message"]

    set_llm_canary(app, 50)
    by_key = {
        key: {arm_of(chat(app, {"X-Route-Key": key})) for _ in range(2)}
        for key in (f"user-{i}" for i in range(16))
    }
    assert all(len(arms) == 1 for arms in by_key.values()), by_key
    assert {arm for arms in by_key.values() for arm in arms} == {"stable", "canary"}

    # RAG and streams take the arm too; a search has no canary of its own: stable answers it.
    rag = httpx.post(
        app["url"] + "/v1/rag",
        json={"question": "Where is Paris?"},
        headers={"X-Refinery-Arm": "canary"},
        timeout=120,
    )
    assert rag.status_code == 200 and rag.json()["model"] == NEXT_ID
    assert rag.headers["X-Refinery-Version"] == "canary/v2"
    headers, _ = stream_events(app, {"X-Refinery-Arm": "canary"})
    assert headers["X-Refinery-Version"] == "canary/v2"
    search = httpx.post(app["url"] + "/v1/search", json={"texts": ["Paris"], "k": 1}, timeout=60)
    assert search.headers["X-Refinery-Version"] == "stable/v1"


def test_tokens_and_streams_are_counted_per_arm(app: dict, controller: Any) -> None:
    set_llm_canary(app, 0)
    # A replica's first report to a new controller is its baseline: count from after it.
    wait_status(controller, lambda s: bool(s["shadow"]["queues"]), timeout_s=60)
    canary = {"X-Refinery-Arm": "canary"}
    for _ in range(3):
        assert arm_of(chat(app, canary)) == "canary"
        _, events = stream_events(app, canary)
        # The usage chunk the engine was asked for is not passed to a client that did not ask.
        assert all('"choices":[]' not in event.replace(" ", "") for event in events)
    _, asked = stream_events(app, canary, stream_options={"include_usage": True})
    assert '"usage"' in asked[-2] and '"choices":[]' in asked[-2].replace(" ", "")
    assert arm_of(chat(app)) == "stable"

    def counted(status: dict) -> bool:
        arms = status["arms"]
        return arms["canary"]["requests"] == 7 and arms["stable"]["requests"] == 1

    arms = wait_status(controller, counted, timeout_s=60)["arms"]
    assert arms["canary"]["tokens_out"] == 7 * GREEDY["max_tokens"]
    assert arms["canary"]["tokens_in"] == 7 * arms["stable"]["tokens_in"] > 0
    assert arms["canary"]["errors"] == 0


def test_greedy_requests_are_shadowed_and_compared(app: dict, controller: Any) -> None:
    set_llm_canary(app, 0, shadow=1.0)
    for i in range(5):
        prompt = [{"role": "user", "content": f"Question number {i}?"}]
        assert arm_of(chat(app, messages=prompt)) == "stable"
    assert arm_of(chat(app, temperature=0.8)) == "stable"  # sampled: no shadow, nothing to match

    def compared(status: dict) -> bool:
        pair = status["shadow"]["agreement"].get("v1 -> v2")
        return pair is not None and pair["pairs"] >= 5

    time.sleep(2)  # a stray sixth pair would show by now
    summary = wait_status(controller, compared, timeout_s=60)["shadow"]["agreement"]["v1 -> v2"]
    # Other random weights: no greedy answer of six tokens matches.
    assert summary["pairs"] == 5 and summary["exact_match_rate"] == 0.0
    assert summary["length_ratio"] > 0 and summary["overlap_at_10"] is None


def chat_load(app: dict) -> BackgroundLoad:
    """Greedy chats, four at a time."""
    body = {"model": MODEL_ID, "messages": MESSAGES, **GREEDY}

    async def batch() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=app["url"], timeout=120) as client:
            chats = [client.post("/v1/chat/completions", json=body) for _ in range(4)]
            return await asyncio.gather(*chats)

    return BackgroundLoad(batch)


def test_a_rollout_promotes_the_new_model_and_rolls_it_back(app: dict, controller: Any) -> None:
    import ray

    from serve.canary.rollout import RolloutError

    with pytest.raises(RolloutError, match="llm_arms"):
        ray.get(controller.rollout.remote("v2", None, {}, llm="not-deployed"))
    # Latency is not what this test judges: a loaded 2-core machine makes CPU engines slow.
    config = {"steps": [50, 100], "interval_s": 1, "min_requests": 8, "shadow": 0,
              "gates": {"max_p99_s": 120}}  # fmt: skip
    with chat_load(app) as load:
        ray.get(controller.rollout.remote("v2", None, config, llm=NEXT_ID))
        status = rollout_status(controller, "promoted", timeout_s=180)
    assert set(load.statuses) == {200}, load.statuses
    assert [e["kind"] for e in status["rollout"]["history"]][-1] == "promote"
    promotion = {"version": "v2", "llm": NEXT_ID}
    asyncio.run(wait_for_routing(app["url"], lambda r: promotion.items() <= r.items()))
    promoted = chat(app)
    assert promoted.json()["model"] == NEXT_ID
    assert promoted.headers["X-Refinery-Version"] == "stable/v2"

    ray.get(controller.rollback.remote())
    rolled_back = {"version": "v1", "llm": MODEL_ID}
    asyncio.run(wait_for_routing(app["url"], lambda r: rolled_back.items() <= r.items()))
    assert arm_of(chat(app)) == "stable"
