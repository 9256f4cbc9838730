"""RAG retrieval from Qdrant (embedded mode, the collection the document pipeline writes) finds
what exact search finds, and applies payload filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.documents.qdrant import ensure_collection, upsert
from refinery.config import QdrantConfig
from refinery.qdrant import connect
from serve.errors import SchemaMismatch
from serve.qdrant_retriever import QdrantRetriever

RNG = np.random.default_rng(0)
VECTORS = RNG.normal(size=(50, 16)).astype(np.float32)
VECTORS /= np.linalg.norm(VECTORS, axis=1, keepdims=True)


@pytest.fixture
def retriever(tmp_path: Path) -> QdrantRetriever:
    cfg = QdrantConfig(enabled=True, collection="chunks")
    table = pa.table(
        {
            "id": [f"chunk-{i}" for i in range(50)],
            "source": [f"s{i % 3}" for i in range(50)],
            "text": [f"text {i}" for i in range(50)],
            "vector": list(VECTORS),
        }
    )
    client = connect(cfg, str(tmp_path))
    ensure_collection(client, "chunks", 16)
    upsert(client, "chunks", [table], batch_size=16, retries=1)
    client.close()
    return QdrantRetriever(cfg, str(tmp_path))


def test_hits_equal_exact_search(retriever: QdrantRetriever) -> None:
    query = VECTORS[7] + 0.05
    expected = np.argsort(-(VECTORS @ query))[:5]
    hits = retriever.search(query, 5, None)
    assert [hit.id for hit in hits] == [f"chunk-{i}" for i in expected]
    assert hits[0].payload["text"] == f"text {expected[0]}"


def test_filters_restrict_the_hits(retriever: QdrantRetriever) -> None:
    hits = retriever.search(VECTORS[0], 50, {"source": ["s1", "s2"]})
    assert len(hits) == 33 and {hit.payload["source"] for hit in hits} == {"s1", "s2"}
    assert retriever.search(VECTORS[0], 5, {"source": "none"}) == []


def test_a_missing_collection_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no collection 'absent'"):
        QdrantRetriever(QdrantConfig(enabled=True, collection="absent"), str(tmp_path))


@pytest.mark.parametrize("wanted", [1.5, [1.5], ["s1", 2], [True]])
def test_filter_values_qdrant_cannot_match_are_refused(
    retriever: QdrantRetriever, wanted: object
) -> None:
    with pytest.raises(SchemaMismatch, match="filter field 'source': Qdrant matches a string"):
        retriever.search(VECTORS[0], 5, {"source": wanted})
