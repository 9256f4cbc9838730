"""GPU checks: run only where CUDA is present (skipped elsewhere by tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from refinery.config import EmbeddingConfig
from refinery.embedding import load_embedder

TEXTS = ["Ray Serve hosts the index.", "MinHash finds near-duplicate documents."]


@pytest.mark.gpu
def test_embedding_on_cuda_matches_cpu() -> None:
    cpu = load_embedder(EmbeddingConfig(device="cpu")).encode(TEXTS, normalize_embeddings=True)
    gpu = load_embedder(EmbeddingConfig(device="cuda")).encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
