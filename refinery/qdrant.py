"""The Qdrant client both the document pipeline (writes) and Serve (RAG retrieval) use."""

from __future__ import annotations

from typing import Any

from refinery.config import QdrantConfig


def connect(cfg: QdrantConfig, storage_root: str) -> Any:
    """A server by URL, else embedded local mode in a folder (one process may open it)."""
    from qdrant_client import QdrantClient

    return QdrantClient(url=cfg.url) if cfg.url else QdrantClient(path=f"{storage_root}/qdrant")
