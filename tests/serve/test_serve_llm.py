"""The OpenAI-compatible endpoints and /v1/rag: the official openai client against the real
vLLM CPU engine (tiny model, random weights: greedy text is gibberish but deterministic)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from serve_helpers import AUTH, DOCS, KEY, MODEL_ID, post

GREEDY = {"temperature": 0.0, "max_tokens": 12}
MESSAGES = [{"role": "user", "content": "What does Refinery do?"}]


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["url"] + "/v1", api_key=KEY, timeout=120, max_retries=0)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL_ID]


def test_chat_streamed_equals_chat_whole(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, **GREEDY)
    assert whole.model == MODEL_ID and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == GREEDY["max_tokens"]
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=MESSAGES, stream=True, **GREEDY
    )
    deltas = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(deltas) > 1
    assert "".join(deltas) == whole.choices[0].message.content


def test_completions_stream_over_sse(served: dict[str, Any], client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL_ID, prompt="Ray Serve hosts", **GREEDY)
    stream = client.completions.create(
        model=MODEL_ID, prompt="Ray Serve hosts", stream=True, **GREEDY
    )
    assert "".join(chunk.choices[0].text for chunk in stream) == whole.choices[0].text
    body = {"model": MODEL_ID, "prompt": "Ray", "stream": True, **GREEDY}
    with httpx.stream(
        "POST", served["url"] + "/v1/completions", json=body, headers=AUTH, timeout=120
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        events = [line for line in raw.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1


def test_client_mistakes_map_to_openai_errors(
    served: dict[str, Any], client: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError, match="nonexistent"):
        client.chat.completions.create(model="nonexistent", messages=MESSAGES, **GREEDY)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 512"):
        client.completions.create(model=MODEL_ID, prompt="word " * 600, **GREEDY)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL_ID, messages="not a list", **GREEDY)
    anonymous = openai.OpenAI(base_url=served["url"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_rag_answers_from_the_retrieved_sources(served: dict[str, Any]) -> None:
    question = {"question": "Which city is the capital of France?", "k": 3}
    response = post(served, "/v1/rag", question)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL_ID and isinstance(body["answer"], str) and body["answer"]
    ids = [source["id"] for source in body["sources"]]
    assert ids[0] == "paris" and len(ids) == 3 and set(ids) <= {name for name, _, _ in DOCS}
    assert body["sources"][0]["text"].startswith("Paris is the capital")
    assert set(body["cited"]) <= set(ids)

    with httpx.stream(
        "POST",
        served["url"] + "/v1/rag",
        json={**question, "stream": True},
        headers=AUTH,
        timeout=120,
    ) as raw:
        events = [line.removeprefix("data: ") for line in raw.iter_lines() if line]
    assert events[-1] == "[DONE]"
    first, *deltas, last = [json.loads(event) for event in events[:-1]]
    assert [source["id"] for source in first["sources"]] == ids
    assert "".join(delta["delta"] for delta in deltas) == last["answer"] == body["answer"]


def test_rag_mistakes_are_4xx(served: dict[str, Any]) -> None:
    too_long = post(served, "/v1/rag", {"question": "why " * 400, "max_tokens": 24})
    assert too_long.status_code == 400
    assert "prompt tokens" in too_long.json()["error"]["message"]
    assert post(served, "/v1/rag", {"question": ""}).status_code == 400
    assert post(served, "/v1/rag", {"question": "x", "k": 51}).status_code == 400
    mistyped = post(served, "/v1/rag", {"question": "x", "filter": {"topic": 1}})
    assert mistyped.status_code == 400
    assert "'topic': 1 does not fit the column's type string" in mistyped.json()["error"]["message"]


def test_readiness_covers_the_llm(served: dict[str, Any]) -> None:
    ready = httpx.get(served["url"] + "/readyz", timeout=60).json()
    assert ready["status"] == "ready" and ready["llm"] == "ok"
