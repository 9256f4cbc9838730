"""RAG prompts without Ray: sources cut to the model's context by its own tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from serve.errors import APIError
from serve.rag import MIN_SOURCE_TOKENS, PromptFitter, cited_sources, rag_messages

SYSTEM = "Answer from the numbered sources; cite them as [n]."


@pytest.fixture(scope="module")
def fitter(tiny_llm_dir: Path) -> PromptFitter:
    return PromptFitter(AutoTokenizer.from_pretrained(tiny_llm_dir), max_model_len=256)


def sources_in(messages: list[dict]) -> list[str]:
    return re.findall(r"^\[\d+\] (.*)$", messages[1]["content"], flags=re.MULTILINE)


def test_long_sources_share_the_context_evenly(fitter: PromptFitter) -> None:
    sources = [f"source {n} " + "lorem ipsum dolor sit amet " * 200 for n in range(5)]
    messages, used = fitter.fit(SYSTEM, "What is lorem ipsum?", sources, max_tokens=64)
    assert fitter.count(messages) <= 256 - 64
    kept = sources_in(messages)
    assert used == len(kept) >= 2
    assert [text.split(" lorem")[0] for text in kept] == [f"source {n}" for n in range(used)]
    lengths = [len(fitter.tokenizer.encode(t, add_special_tokens=False)) for t in kept]
    assert max(lengths) - min(lengths) <= 3


def test_short_sources_leave_their_room_to_long_ones(fitter: PromptFitter) -> None:
    sources = ["Paris is in France.", "lorem ipsum dolor sit amet " * 200]
    messages, used = fitter.fit(SYSTEM, "Where is Paris?", sources, max_tokens=64)
    short, long = sources_in(messages)
    assert used == 2 and short == sources[0]
    assert fitter.count(messages) > 256 - 64 - 16  # the long one took what was left


def test_short_sources_are_kept_whole(fitter: PromptFitter) -> None:
    sources = ["Paris is in France.", "Berlin is in Germany."]
    messages, used = fitter.fit(SYSTEM, "Where is Paris?", sources, max_tokens=32)
    assert used == 2 and messages == rag_messages(SYSTEM, "Where is Paris?", sources)


def test_a_question_that_cannot_fit_is_a_client_error(fitter: PromptFitter) -> None:
    with pytest.raises(APIError, match="prompt tokens") as error:
        fitter.fit(SYSTEM, "why " * 300, ["x"], max_tokens=64)
    assert error.value.status == 400


def test_no_source_is_cut_below_the_minimum(fitter: PromptFitter) -> None:
    messages, used = fitter.fit(SYSTEM, "q", ["alpha beta gamma delta " * 100] * 20, max_tokens=64)
    kept = sources_in(messages)
    assert len(kept) == used >= 1
    lengths = [len(fitter.tokenizer.encode(t, add_special_tokens=False)) for t in kept]
    assert min(lengths) >= MIN_SOURCE_TOKENS
    assert fitter.count(messages) <= 256 - 64


def test_citations_map_to_sources_in_order_of_first_mention() -> None:
    assert cited_sources("As [2] says, and [1], and [2] again; [7] and [0] do not exist.", 3) == [
        1,
        0,
    ]
    assert cited_sources("no citations", 3) == []
