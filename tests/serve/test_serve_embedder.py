"""The Serve embedder turns a text into the vector the document pipeline indexed for it, with
the embedding config's `normalize` on or off (both call refinery/embedding.py: encode_texts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.documents.embed import Embedder
from refinery.config import EmbeddingConfig
from refinery.embedding import resolve_model_path

TEXTS = ["read parquet files with pyarrow", "a cat sat on the mat", "Ray Serve batches requests"]


@pytest.fixture(scope="module")
def unnormalized_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM without its final Normalize module, so `normalize` decides the vectors' length."""
    model = tmp_path_factory.mktemp("models") / "minilm-raw"
    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), model)
    modules = json.loads((model / "modules.json").read_text())
    kept = [m for m in modules if not m["type"].endswith(".Normalize")]
    assert len(kept) == len(modules) - 1
    (model / "modules.json").write_text(json.dumps(kept))
    return model


@pytest.mark.parametrize("normalize", [True, False])
def test_query_vectors_equal_the_indexed_vectors(
    served: dict[str, Any], unnormalized_model: Path, normalize: bool
) -> None:
    from ray import serve

    from serve.embedder_deployment import EmbedderDeployment

    cfg = EmbeddingConfig(model=str(unnormalized_model), normalize=normalize)
    indexed = Embedder(cfg, threads=1)(pa.table({"text": TEXTS}))
    indexed = np.array(indexed["vector"].to_pylist(), dtype=np.float32)

    name = f"embedder-normalize-{normalize}".lower()
    handle = serve.run(EmbedderDeployment.bind(cfg.model_dump()), name=name, route_prefix=None)
    try:
        queried = handle.embed.remote(TEXTS).result(timeout_s=120)
    finally:
        serve.delete(name)

    np.testing.assert_allclose(queried, indexed, rtol=1e-4, atol=1e-5)
    unit = np.allclose(np.linalg.norm(indexed, axis=1), 1.0, atol=1e-4)
    assert unit == normalize
