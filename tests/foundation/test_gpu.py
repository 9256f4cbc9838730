"""GPU checks: run only where CUDA is present (skipped elsewhere by tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from refinery.config import EmbeddingConfig
from refinery.embedding import load_embedder

TEXTS = ["Ray Serve hosts the index.", "MinHash finds near-duplicate documents."]


@pytest.mark.gpu
def test_embedding_on_cuda_matches_cpu() -> None:
    # float32 on CPU: `auto` would run bfloat16 on a CPU that has it, further from CUDA's float32.
    cpu_cfg = EmbeddingConfig(device="cpu", precision="fp32")
    cpu = load_embedder(cpu_cfg).encode(TEXTS, normalize_embeddings=True)
    gpu = load_embedder(EmbeddingConfig(device="cuda")).encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
