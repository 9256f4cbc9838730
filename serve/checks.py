"""Limits on what one request may ask, shared by the serving classes: each breach is the caller's
mistake, answered with a 400 that names it."""

from __future__ import annotations

import numpy as np

from serve.config import LimitsConfig
from serve.errors import bad_request


def check_k(k: int, limits: LimitsConfig) -> None:
    if k > limits.max_k:
        raise bad_request(f"k={k} exceeds the limit of {limits.max_k}")


def check_items(count: int, what: str, limits: LimitsConfig) -> None:
    if count > limits.max_batch_items:
        raise bad_request(f"{count} {what} exceed the limit of {limits.max_batch_items}")


def check_texts(texts: list[str], limits: LimitsConfig) -> None:
    check_items(len(texts), "texts", limits)
    for i, text in enumerate(texts):
        if not text.strip():
            raise bad_request(f"texts[{i}] is empty")
        if len(text) > limits.max_text_chars:
            raise bad_request(
                f"texts[{i}] has {len(text)} characters; the limit is {limits.max_text_chars}"
            )


def check_vectors(vectors: list[list[float]], dimension: int, name: str = "vectors") -> np.ndarray:
    """The vectors as a float32 matrix, each of the index's dimension and finite."""
    for i, vector in enumerate(vectors):
        if len(vector) != dimension:
            raise bad_request(
                f"{name}[{i}] has dimension {len(vector)}; the index has dimension {dimension}"
            )
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dimension)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        # Python's json accepts NaN and Infinity literals, so they do reach this point.
        raise bad_request(f"{name}[{int(np.argmin(finite))}] holds NaN or infinity")
    return matrix
