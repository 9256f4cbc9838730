"""Ingress protection and request parsing, without Ray."""

from __future__ import annotations

import pytest

from serve.config import LimitsConfig, ServeAppConfig
from serve.errors import APIError
from serve.guard import ANONYMOUS, RateLimiter, authenticate, check_body_size
from serve.ingress import _parse
from serve.protocol import EmbedRequest, SearchRequest


def test_no_keys_means_anonymous_access() -> None:
    assert authenticate(None, frozenset()) == ANONYMOUS


@pytest.mark.parametrize(
    ("header", "message"),
    [(None, "missing"), ("Basic abc", "missing"), ("Bearer wrong", "invalid API key")],
)
def test_bad_or_missing_key_is_401(header: str | None, message: str) -> None:
    with pytest.raises(APIError, match=message) as error:
        authenticate(header, frozenset({"secret"}))
    assert error.value.status == 401


def test_valid_key_is_the_caller() -> None:
    assert authenticate("Bearer secret", frozenset({"other", "secret"})) == "secret"


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINERY_API_KEYS", " a, b ,,")
    assert ServeAppConfig().resolved_api_keys() == {"a", "b"}
    assert ServeAppConfig(api_keys=["c"]).resolved_api_keys() == {"c"}


def test_rate_limit_refills_per_key() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    limiter.take("a", now=0.0)
    limiter.take("a", now=0.0)
    with pytest.raises(APIError) as error:
        limiter.take("a", now=0.1)
    assert error.value.status == 429
    limiter.take("b", now=0.1)  # another key has its own bucket
    limiter.take("a", now=0.6)  # half a second refills one token at 2/s


def test_body_size_limit() -> None:
    limits = LimitsConfig(max_body_bytes=1024)
    check_body_size("1024", None, limits)
    with pytest.raises(APIError, match="2048 bytes exceeds 1024") as error:
        check_body_size(None, b"x" * 2048, limits)
    assert error.value.status == 413


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'{"k": 3}', "exactly one of 'texts' or 'vectors'"),
        (b'{"texts": ["a"], "vectors": [[1.0]]}', "exactly one of 'texts' or 'vectors'"),
        (b'{"texts": []}', "at least one query"),
        (b'{"texts": ["a"], "k": 0}', "k: Input should be greater than or equal to 1"),
        (b'{"texts": ["a"], "top_k": 3}', "top_k: Extra inputs are not permitted"),
        (b'{"vectors": [["x"]]}', "vectors.0.0"),
    ],
)
def test_bad_search_bodies_are_400_with_a_message(raw: bytes, message: str) -> None:
    with pytest.raises(APIError, match=message) as error:
        _parse(raw, SearchRequest)
    assert error.value.status == 400


def test_good_bodies_parse() -> None:
    request = _parse(
        b'{"vectors": [[1, 2]], "k": 2, "filter": {"topic": ["a", "b"]}}', SearchRequest
    )
    assert request.size == 1 and request.filter == {"topic": ["a", "b"]}
    assert _parse(b'{"texts": ["hello"]}', EmbedRequest).texts == ["hello"]
