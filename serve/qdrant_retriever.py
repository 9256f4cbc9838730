"""RAG retrieval from Qdrant instead of the native index, when the config says so: the
collection the document pipeline upserts (payload id, doc_id, source, text, metadata)."""

from __future__ import annotations

from typing import Any

import numpy as np

from refinery.config import QdrantConfig
from refinery.qdrant import connect
from serve.errors import SchemaMismatch
from serve.protocol import Hit, PayloadFilter


def qdrant_filter(payload_filter: PayloadFilter | None) -> Any:
    """Our filter (field -> value or any of values) as Qdrant's `must` conditions."""
    if not payload_filter:
        return None
    from qdrant_client.models import Filter

    return Filter(must=[_condition(field, wanted) for field, wanted in payload_filter.items()])


def _condition(field: str, wanted: Any) -> Any:
    from pydantic import ValidationError
    from qdrant_client.models import FieldCondition, MatchAny, MatchValue

    try:
        match = MatchAny(any=wanted) if isinstance(wanted, list) else MatchValue(value=wanted)
    except ValidationError:
        raise SchemaMismatch(
            f"filter field {field!r}: Qdrant matches a string, an integer or a boolean, or a "
            f"list of strings or of integers, not {wanted!r}"
        ) from None
    return FieldCondition(key=field, match=match)


class QdrantRetriever:
    def __init__(self, cfg: QdrantConfig, storage_root: str) -> None:
        self.client = connect(cfg, storage_root)
        self.collection = cfg.collection
        if not self.client.collection_exists(self.collection):
            raise ValueError(f"Qdrant has no collection {self.collection!r}")

    def search(self, vector: np.ndarray, k: int, payload_filter: PayloadFilter | None) -> list[Hit]:
        response = self.client.query_points(
            self.collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            query_filter=qdrant_filter(payload_filter),
            limit=k,
            with_payload=True,
        )
        return [
            Hit(
                id=(point.payload or {}).get("id", str(point.id)),
                score=point.score,
                payload=point.payload or {},
            )
            for point in response.points
        ]
