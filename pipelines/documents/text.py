"""Text helpers shared by the filters and both dedup steps, so every step sees the same words."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

_DEDUP_TOKEN = re.compile(r"\w+")
_BLANK_LINES = re.compile(r"\n{3,}")
# C0/C1 control characters except tab and newline, plus zero-width format characters that
# render as nothing but split words for every later step.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")


def normalize(text: str, form: str = "NFC") -> str:
    """Unicode normal form, no control characters, single spaces, at most one blank line."""
    text = unicodedata.normalize(form, text).replace("\r\n", "\n").replace("\r", "\n")
    # str.split() collapses and strips a line's spaces of every kind in one call, where a
    # regular expression tests every character of the page.
    lines = [" ".join(line.split()) for line in _CONTROL.sub("", text).split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def dedup_tokens(text: str) -> list[str]:
    """Case- and punctuation-insensitive word tokens: what both dedup steps compare."""
    return _DEDUP_TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def token_hashes(texts: Iterable[str]) -> list[np.ndarray]:
    """Per text: a 64-bit hash of each of its dedup tokens, in order (uint64). Each distinct
    token of the batch is hashed once; both dedup steps work on these arrays."""
    cache: dict[str, int] = {}
    out = []
    for text in texts:
        tokens = dedup_tokens(text)
        cache.update((t, _token_hash(t)) for t in set(tokens).difference(cache))
        out.append(np.fromiter(map(cache.__getitem__, tokens), np.uint64, len(tokens)))
    return out


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def tokens_digest(hashes: np.ndarray) -> str:
    """Hash of a token-hash sequence: what exact dedup compares (little-endian bytes, so
    every node of a cluster hashes equal content alike)."""
    return hashlib.blake2b(hashes.astype("<u8", copy=False).tobytes(), digest_size=16).hexdigest()


def content_hash(text: str) -> str:
    """Hash of the normalised tokens: equal across case, spacing and punctuation changes."""
    return tokens_digest(token_hashes([text])[0])


def shingles(text: str, n: int) -> set[bytes]:
    """Word n-grams; a text shorter than n words is one shingle, so it still has a signature."""
    tokens = dedup_tokens(text)
    if len(tokens) < n:
        return {" ".join(tokens).encode()}
    return {" ".join(tokens[i : i + n]).encode() for i in range(len(tokens) - n + 1)}


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
