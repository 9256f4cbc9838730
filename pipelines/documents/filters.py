"""Filters: steps that keep or drop a document, naming the rule that dropped it."""

from __future__ import annotations

import re
import string

from pipelines.documents.config import GopherConfig, LengthFilterConfig, RepetitionFilterConfig
from pipelines.documents.steps import Doc, Filter

_BULLETS = ("•", "-", "*", "‣", "◦")
_PUNCTUATION = string.punctuation + "“”‘’«»–—…"


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
        words = [t for t in tokens if t.isalnum() or any(c.isalnum() for c in t)]
        n = len(words)
        if cfg.min_words is not None and n < cfg.min_words:
            return "min_words"
        if cfg.max_words is not None and n > cfg.max_words:
            return "max_words"
        if n == 0:
            return "min_words"
        mean = sum(len(w.strip(_PUNCTUATION)) for w in words) / n
        if cfg.min_mean_word_length is not None and mean < cfg.min_mean_word_length:
            return "min_mean_word_length"
        if cfg.max_mean_word_length is not None and mean > cfg.max_mean_word_length:
            return "max_mean_word_length"
        symbols = text.count("#") + text.count("...") + text.count("…")
        if cfg.max_symbol_word_ratio is not None and symbols / n > cfg.max_symbol_word_ratio:
            return "symbol_word_ratio"
        lines = [line for line in text.split("\n") if line.strip()]
        bullets = sum(line.lstrip().startswith(_BULLETS) for line in lines)
        if (
            cfg.max_bullet_lines_ratio is not None
            and bullets / len(lines) > cfg.max_bullet_lines_ratio
        ):
            return "bullet_lines"
        alpha = sum(t.isalpha() or any(c.isalpha() for c in t) for t in tokens) / len(tokens)
        if cfg.min_alpha_words_ratio is not None and alpha < cfg.min_alpha_words_ratio:
            return "alpha_words"
        if cfg.min_stop_words is not None:
            stops = sum(w.strip(_PUNCTUATION).lower() in self._stop_words for w in words)
            if stops < cfg.min_stop_words:
                return "stop_words"
        return True
