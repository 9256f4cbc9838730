"""Text helpers shared by the filters and both dedup steps, so every step sees the same words."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_DEDUP_TOKEN = re.compile(r"\w+")
_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# C0/C1 control characters except tab and newline, plus zero-width format characters that
# render as nothing but split words for every later step.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")


def normalize(text: str, form: str = "NFC") -> str:
    """Unicode normal form, no control characters, single spaces, at most one blank line."""
    text = unicodedata.normalize(form, text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text).replace("\t", " ")
    lines = (_HSPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def dedup_tokens(text: str) -> list[str]:
    """Case- and punctuation-insensitive word tokens: what both dedup steps compare."""
    return _DEDUP_TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def content_hash(text: str) -> str:
    """Hash of the normalised tokens: equal across case, spacing and punctuation changes."""
    return hashlib.blake2b(" ".join(dedup_tokens(text)).encode(), digest_size=16).hexdigest()


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
