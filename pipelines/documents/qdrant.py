"""Upsert chunks into Qdrant (a server by URL, or embedded local mode: refinery/qdrant.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa


def point_id(chunk_id: str) -> str:
    """A UUID derived from the chunk id, so a re-run overwrites points instead of adding."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, chunk_id))


def ensure_collection(client: Any, name: str, dim: int) -> None:
    from qdrant_client.models import Distance, VectorParams

    if not client.collection_exists(name):
        client.create_collection(
            name, vectors_config=VectorParams(size=dim, distance=Distance.COSINE)
        )


def points(table: pa.Table) -> list[Any]:
    from qdrant_client.models import PointStruct

    payload_columns = [c for c in ("id", "doc_id", "source", "text") if c in table.column_names]
    payloads = table.select(payload_columns).to_pylist()
    metadata = table["metadata"].to_pylist() if "metadata" in table.column_names else None
    vectors = table["vector"].to_pylist()
    out = []
    for i, (payload, vector) in enumerate(zip(payloads, vectors, strict=True)):
        if metadata is not None:
            payload["metadata"] = json.loads(metadata[i])
        out.append(PointStruct(id=point_id(payload["id"]), vector=vector, payload=payload))
    return out


def upsert(
    client: Any, collection: str, batches: Iterable[pa.Table], batch_size: int, retries: int
) -> int:
    """Upsert every batch (re-sliced to batch_size), retrying each with backoff; the count."""
    total = 0
    for table in batches:
        for start in range(0, table.num_rows, batch_size):
            part = points(table.slice(start, batch_size))
            _with_retries(lambda p=part: client.upsert(collection, points=p, wait=True), retries)
            total += len(part)
    return total


def _with_retries(call: Any, retries: int) -> None:
    for attempt in range(retries):
        try:
            call()
            return
        # A server can fail in many ways (HTTP, gRPC, timeouts); each is worth a retry.
        except Exception:
            if attempt == retries - 1:
                raise
            time.sleep(0.5 * 2**attempt)
