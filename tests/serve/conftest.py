"""One Serve application for every Serve test (real Ray Serve on the shared local Ray, the real
vLLM CPU engine with the tiny model): starting it takes most of a minute, so it is shared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import APP, KEY, MODEL_ID, free_port, write_snapshot


@pytest.fixture(scope="session")
def served(
    ray_session: None, tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from ray import serve

    from serve.app import build

    snapshot, vectors = write_snapshot(tmp_path_factory.mktemp("snapshot"))
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "version": "test-1",
        "api_keys": [KEY],
        "index": {"snapshot": str(snapshot), "max_batch_size": 64},
        "limits": {"max_k": 50, "max_body_bytes": 65536},
        "llm": {"model": str(tiny_llm_dir), "model_id": MODEL_ID, "max_model_len": 512},
        "rag": {"k": 4, "max_tokens": 24},
    }
    serve.run(build(args), name=APP, route_prefix="/")
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "port": port,
            "vectors": vectors,
            "snapshot": snapshot,
            "model_dir": tiny_llm_dir,
        }
    finally:
        serve.shutdown()
