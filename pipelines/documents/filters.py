"""Filters: steps that keep or drop a document, naming the rule that dropped it."""

from __future__ import annotations

import itertools
import re
import string

from pipelines.documents.config import GopherConfig, LengthFilterConfig, RepetitionFilterConfig
from pipelines.documents.steps import Doc, Filter

_BULLETS = ("•", "-", "*", "‣", "◦")
_PUNCTUATION = string.punctuation + "“”‘’«»–—…"
# Per-token tests as compiled searches, not Python loops over characters. `[^\W_]` is a
# character for which str.isalnum() holds; `[^\W\d_]` also lets through the numeric
# characters that are not letters (a candidate, confirmed with str.isalpha()).
_HAS_ALNUM = re.compile(r"[^\W_]").search
_ALPHA_CANDIDATE = re.compile(r"[^\W\d_]").search
# Lines (by "\n") with a non-space character, and those whose first one is a bullet.
_NONBLANK_LINE = re.compile(r"^[^\S\n]*\S", re.M)
_BULLET_LINE = re.compile(r"^[^\S\n]*[" + re.escape("".join(_BULLETS)) + "]", re.M)


class LengthFilter(Filter):
    name = "length"

    def __init__(self, cfg: LengthFilterConfig) -> None:
        self.cfg = cfg

    def filter(self, doc: Doc) -> bool | str:
        n = len(doc["text"])
        if self.cfg.min_chars is not None and n < self.cfg.min_chars:
            return "too_short"
        if self.cfg.max_chars is not None and n > self.cfg.max_chars:
            return "too_long"
        return True


class RepetitionFilter(Filter):
    """Spam such as 'aaaaaaaaaaaa' or '!!!!!!!!!!!!': one character more than max_run times."""

    name = "repetition"

    def __init__(self, cfg: RepetitionFilterConfig) -> None:
        allowed = re.escape(cfg.ignore_chars) if cfg.ignore_chars else ""
        self._run = re.compile(rf"([^\s{allowed}])\1{{{cfg.max_run},}}")

    def filter(self, doc: Doc) -> bool | str:
        return "char_run" if self._run.search(doc["text"]) else True


class GopherQuality(Filter):
    """Gopher quality rules (Rae et al. 2021); words are whitespace-separated tokens."""

    name = "gopher"

    def __init__(self, cfg: GopherConfig) -> None:
        self.cfg = cfg
        self._stop_words = frozenset(cfg.stop_words)

    def filter(self, doc: Doc) -> bool | str:
        cfg, text = self.cfg, doc["text"]
        tokens = text.split()
        # Tokens with a letter or digit are words; pure punctuation is not. (Most tokens are
        # all letters: the whole-token test answers them without a Python loop per char.)
        words = [t for t in tokens if t.isalnum() or _HAS_ALNUM(t)]
        n = len(words)
        if cfg.min_words is not None and n < cfg.min_words:
            return "min_words"
        if cfg.max_words is not None and n > cfg.max_words:
            return "max_words"
        if n == 0:
            return "min_words"
        bare = list(map(str.strip, words, itertools.repeat(_PUNCTUATION, n)))
        mean = sum(map(len, bare)) / n
        if cfg.min_mean_word_length is not None and mean < cfg.min_mean_word_length:
            return "min_mean_word_length"
        if cfg.max_mean_word_length is not None and mean > cfg.max_mean_word_length:
            return "max_mean_word_length"
        symbols = text.count("#") + text.count("...") + text.count("…")
        if cfg.max_symbol_word_ratio is not None and symbols / n > cfg.max_symbol_word_ratio:
            return "symbol_word_ratio"
        if cfg.max_bullet_lines_ratio is not None:
            bullets = len(_BULLET_LINE.findall(text)) / len(_NONBLANK_LINE.findall(text))
            if bullets > cfg.max_bullet_lines_ratio:
                return "bullet_lines"
        if cfg.min_alpha_words_ratio is not None:
            alpha = sum(map(_has_alpha, tokens)) / len(tokens)
            if alpha < cfg.min_alpha_words_ratio:
                return "alpha_words"
        if cfg.min_stop_words is not None:
            stops = sum(map(self._stop_words.__contains__, map(str.lower, bare)))
            if stops < cfg.min_stop_words:
                return "stop_words"
        return True


def _has_alpha(token: str) -> bool:
    if token.isalpha():
        return True
    found = _ALPHA_CANDIDATE(token)
    if found is None:
        return False
    return found.group().isalpha() or any(c.isalpha() for c in token)
