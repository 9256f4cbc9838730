"""Prometheus metrics through Ray's metrics API: requests and latency per endpoint and status,
batch sizes, and the engine's tokens in and out, scraped from the node's metrics endpoint."""

from __future__ import annotations

import re
import time
import urllib.request
from typing import Any

from serve_helpers import MODEL_ID, post

WANTED = {
    "requests": r'ray_refinery_requests\w*\{[^}]*endpoint="/v1/search"[^}]*status="200"',
    "latency": r'ray_refinery_request_latency_ms_bucket\{[^}]*endpoint="/v1/search"',
    "rejected": r'ray_refinery_requests\w*\{[^}]*status="400"',
    "batch sizes": r"ray_refinery_batch_size_bucket\{",
    "tokens in": r"ray_vllm_prompt_tokens\w*\{",
    "tokens out": r"ray_vllm_generation_tokens\w*\{",
}


def scrape() -> str:
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_cover_requests_batches_and_tokens(served: dict[str, Any]) -> None:
    assert post(served, "/v1/search", {"texts": ["capital of France"], "k": 2}).status_code == 200
    assert post(served, "/v1/search", {"texts": ["x"], "k": 0}).status_code == 400
    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert post(served, "/v1/chat/completions", chat).status_code == 200
    missing = list(WANTED)
    deadline = time.monotonic() + 90  # Ray exports metrics every few seconds
    while missing and time.monotonic() < deadline:
        text = scrape()
        missing = [name for name, pattern in WANTED.items() if not re.search(pattern, text)]
        if missing:
            time.sleep(3)
    assert not missing, f"not exported: {missing}"
