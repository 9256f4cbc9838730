"""What the Serve tests share: a small real corpus written as the document pipeline writes a
snapshot, and HTTP helpers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from pipelines.documents.write import write_snapshot as write_snapshot_of
from refinery.config import EmbeddingConfig
from refinery.embedding import encode_texts, load_embedder

APP = "refinery-test"
MODEL_ID = "tiny-test"
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = [
    ("paris", "geography", "Paris is the capital and largest city of France."),
    ("berlin", "geography", "Berlin is the capital of Germany, on the river Spree."),
    ("nile", "geography", "The Nile is a major river flowing north through Egypt."),
    ("python", "code", "Python is a programming language that lets you work quickly."),
    ("rust", "code", "Rust guarantees memory safety without a garbage collector."),
    ("ray", "code", "Ray scales Python applications from a laptop to a cluster."),
    ("bread", "food", "Bread is made by baking a dough of flour and water."),
    ("tea", "food", "Green tea is brewed from unoxidised leaves of the tea plant."),
]


def write_snapshot(
    root: Path,
    first_id: int = 100,
    extra: dict[str, list] | None = None,
    ids: list[int] | None = None,
) -> tuple[Path, np.ndarray]:
    """A snapshot written by the document pipeline's writer, ids from `first_id` unless `ids`
    gives one per document; `extra`: more payload columns, a value per document."""
    # Embedded as the documents job and the Serve embedder embed (refinery/embedding.py).
    cfg = EmbeddingConfig()
    vectors = encode_texts(load_embedder(cfg), [text for _, _, text in DOCS], cfg)
    table = pa.table(
        {
            "id": [name for name, _, _ in DOCS],
            "index_id": np.array(ids or range(first_id, first_id + len(DOCS)), dtype=np.int64),
            "topic": [topic for _, topic, _ in DOCS],
            "text": [text for _, _, text in DOCS],
            **(extra or {}),
        }
    )
    return Path(write_snapshot_of(str(root), table, vectors, model="all-MiniLM-L6-v2")), vectors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(
    served: dict[str, Any], path: str, body: Any, headers: dict | None = None
) -> httpx.Response:
    return httpx.post(
        served["url"] + path, json=body, headers=AUTH if headers is None else headers, timeout=60
    )
