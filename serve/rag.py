"""Retrieval-augmented answers, apart from HTTP: the prompt with numbered sources cut to fit the
model's context, and the source ids an answer cites.

Sources are cut by the LLM's own tokenizer, so a prompt never exceeds max_model_len whatever
the corpus (chunks of 512 tokens meet models with small contexts): each retrieved source gets
an even share of the room, and the lowest-ranked are left out when shares grow too small.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from serve.errors import bad_request

# A source cut shorter than this carries no information worth its header.
MIN_SOURCE_TOKENS = 16
# Chat templates tokenise boundaries slightly differently from the parts counted alone.
SAFETY_TOKENS = 8
_CITATION = re.compile(r"\[(\d+)\]")


def rag_messages(system_prompt: str, question: str, sources: Sequence[str]) -> list[dict]:
    numbered = "\n".join(f"[{n}] {text}" for n, text in enumerate(sources, start=1))
    user = f"Sources:\n{numbered}\n\nQuestion: {question}" if sources else f"Question: {question}"
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def cited_sources(answer: str, count: int) -> list[int]:
    """0-based indexes of the sources an answer cites as [n], in order of first citation."""
    seen: list[int] = []
    for match in _CITATION.finditer(answer):
        n = int(match.group(1))
        if 1 <= n <= count and n - 1 not in seen:
            seen.append(n - 1)
    return seen


class PromptFitter:
    """Builds RAG chat messages within `max_model_len - max_tokens` tokens of the model."""

    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len

    def count(self, messages: list[dict]) -> int:
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=False
        )
        return len(ids)

    def fit(
        self, system_prompt: str, question: str, texts: Sequence[str], max_tokens: int
    ) -> tuple[list[dict], int]:
        """Messages and how many sources they hold (the best-ranked ones, each cut to fit)."""
        limit = self.max_model_len - max_tokens - SAFETY_TOKENS
        base = self.count(rag_messages(system_prompt, question, []))
        if base > limit:
            raise bad_request(
                f"the question takes {base} prompt tokens with the instructions; the model's "
                f"context of {self.max_model_len} leaves {limit} with max_tokens={max_tokens}"
            )
        encoded = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        shares = self._shares(limit - base, [len(ids) for ids in encoded])
        # zip stops at the shares: the lowest-ranked sources without one are left out.
        kept = [self.tokenizer.decode(ids[:n]) for ids, n in zip(encoded, shares, strict=False)]
        return self._trim_to(limit, system_prompt, question, kept)

    def _shares(self, budget: int, lengths: list[int]) -> list[int]:
        """Tokens per source: an even share each, what short sources leave spread over the
        longer ones; the lowest-ranked go first when a share would fall below the minimum."""
        most = min(len(lengths), budget // MIN_SOURCE_TOKENS)
        overheads = list(accumulate(self._overhead(n) for n in range(1, most + 1)))
        for count in range(most, 0, -1):
            available = budget - overheads[count - 1]
            shares = [0] * count
            remaining = count
            for i in sorted(range(count), key=lambda i: lengths[i]):
                shares[i] = min(lengths[i], available // remaining)
                available -= shares[i]
                remaining -= 1
            if min(shares) >= min(MIN_SOURCE_TOKENS, min(lengths[:count])):
                return shares
        return []

    def _overhead(self, n: int) -> int:
        return len(self.tokenizer.encode(f"\n[{n}] ", add_special_tokens=False))

    def _trim_to(
        self, limit: int, system_prompt: str, question: str, kept: list[str]
    ) -> tuple[list[dict], int]:
        messages = rag_messages(system_prompt, question, kept)
        excess = self.count(messages) - limit
        while excess > 0 and kept:
            ids = self.tokenizer.encode(kept[-1], add_special_tokens=False)
            if len(ids) - excess < MIN_SOURCE_TOKENS:
                kept.pop()
            else:
                kept[-1] = self.tokenizer.decode(ids[: len(ids) - excess])
            messages = rag_messages(system_prompt, question, kept)
            excess = self.count(messages) - limit
        return messages, len(kept)
