"""Data of `refinery bench serve`: a clustered, unit-length corpus written as the snapshot the
document pipeline would write (Parquet documents, index file, manifest.json), the raw vectors
for the FAISS peer, and pre-encoded search requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SEED = 0


def corpus(n: int, d: int) -> np.ndarray:
    """Clustered like real embeddings and unit length like MiniLM's (as bench/index.py)."""
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((200, d), dtype=np.float32)
    vectors = centres[rng.integers(0, 200, n)] + rng.standard_normal((n, d), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def payload_columns(n: int) -> dict[str, list[str]]:
    """A short payload per document, so responses carry text as real ones do."""
    return {
        "id": [f"doc-{i:06d}" for i in range(n)],
        "source": [f"bench/file-{i % 997:03d}.txt" for i in range(n)],
        "text": [f"Synthetic passage number {i} of the serve benchmark corpus." for i in range(n)],
    }


def ensure_snapshot(root: Path, n: int, d: int) -> Path:
    """Write (once; later runs reuse it) the snapshot under root/index, by the document
    pipeline's writer, and vectors.npy."""
    index_dir = root / "index"
    if (index_dir / "manifest.json").exists() and (root / "vectors.npy").exists():
        return index_dir
    import pyarrow as pa

    from pipelines.documents.write import write_snapshot

    vectors = corpus(n, d)
    documents = pa.table({"index_id": np.arange(n, dtype=np.int64), **payload_columns(n)})
    write_snapshot(str(root), documents, vectors)
    np.save(root / "vectors.npy", vectors)
    return index_dir


def query_vectors(count: int, d: int) -> np.ndarray:
    """Corpus-like queries (a fresh draw around the same centres), distinct per request."""
    rng = np.random.default_rng(SEED + 1)
    centres = np.random.default_rng(SEED).standard_normal((200, d), dtype=np.float32)
    queries = centres[rng.integers(0, 200, count)] + rng.standard_normal(
        (count, d), dtype=np.float32
    )
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def search_bodies(queries: np.ndarray, k: int) -> list[bytes]:
    """One JSON body per query: `{"vectors": [[...]], "k": k}` (6 decimals, about 3.5 KB)."""
    return [json.dumps({"vectors": [np.round(q, 6).tolist()], "k": k}).encode() for q in queries]
