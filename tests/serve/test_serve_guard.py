"""Ingress protection and request parsing, without Ray."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from serve.config import LimitsConfig, ServeAppConfig
from serve.errors import APIError
from serve.guard import (
    ANONYMOUS,
    RateLimiter,
    authenticate,
    check_body_size,
    open_access_warning,
    read_body,
)
from serve.ingress import _parse
from serve.protocol import DeleteRequest, EmbedRequest, SearchRequest, UpsertRequest, json_bytes


def test_no_keys_means_anonymous_access() -> None:
    assert authenticate(None, frozenset()) == ANONYMOUS


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        ("Basic abc", "missing"),
        ("Bearer wrong", "invalid API key"),
        # Non-ASCII: compare_digest refuses such strings (a TypeError, once a 500).
        ("Bearer sécret", "invalid API key"),
        ("Bearer ключ", "invalid API key"),
        # One key, one spelling: extra whitespace would also give the caller a fresh bucket.
        ("Bearer  secret", "invalid API key"),
        ("Bearer secret ", "invalid API key"),
        ("Bearer\tsecret", "missing"),
    ],
)
def test_bad_or_missing_key_is_401(header: str | None, message: str) -> None:
    with pytest.raises(APIError, match=message) as error:
        authenticate(header, frozenset({"secret"}))
    assert error.value.status == 401


def test_valid_key_is_the_caller() -> None:
    assert authenticate("Bearer secret", frozenset({"other", "secret"})) == "secret"
    assert authenticate("bearer secret", frozenset({"secret"})) == "secret"


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("10.0.0.5", True),
        ("example.org", True),
    ],
)
def test_serving_without_keys_off_loopback_is_warned_about(host: str, warned: bool) -> None:
    message = (
        f"serving on {host} without API keys: anyone who reaches it may call every endpoint; "
        "set api_keys or REFINERY_API_KEYS"
    )
    assert open_access_warning(host, frozenset()) == (message if warned else None)
    assert open_access_warning(host, frozenset({"key"})) is None


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


def test_rate_limit_table_drops_the_least_recently_seen_caller() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_callers=2)
    limiter.take("a", now=0.0)
    limiter.take("b", now=0.0)
    with pytest.raises(APIError):
        limiter.take("a", now=0.0)  # a is seen again (and limited): b is now the oldest
    limiter.take("c", now=0.0)
    assert list(limiter.buckets) == ["a", "c"]
    with pytest.raises(APIError):
        limiter.take("a", now=0.0)  # a kept its empty bucket


def test_declared_body_size_limit() -> None:
    limits = LimitsConfig(max_body_bytes=1024)
    check_body_size("1024", limits)
    check_body_size(None, limits)
    with pytest.raises(APIError, match="2048 bytes exceeds the limit of 1024 bytes") as error:
        check_body_size("2048", limits)
    assert error.value.status == 413
    with pytest.raises(APIError, match="Content-Length is not a number") as error:
        check_body_size("lots", limits)
    assert error.value.status == 400


def test_a_body_is_read_no_further_than_the_limit() -> None:
    limits = LimitsConfig(max_body_bytes=4096)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 1
            yield b"x" * 1000

    with pytest.raises(APIError, match="body exceeds the limit of 4096 bytes") as error:
        asyncio.run(read_body(endless(), limits))
    assert error.value.status == 413 and sent == 5

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"texts": ', b'["a"]}', b""):
            yield part

    assert asyncio.run(read_body(chunks(), limits)) == b'{"texts": ["a"]}'


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


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"texts": ["a"], "filter": {"source": []}}', "field 'source' has an empty list"),
        (b'{"texts": ["a"], "filter": {"source": {"a": 1}}}', "field 'source': a value is a"),
        (b'{"texts": ["a"], "filter": {"source": ["a", null]}}', "field 'source': a value is a"),
        (b'{"texts": ["a"], "filter": [1]}', "filter: expected an object"),
    ],
)
def test_bad_filters_are_400_with_a_message(raw: bytes, message: str) -> None:
    with pytest.raises(APIError, match=message) as error:
        _parse(raw, SearchRequest)
    assert error.value.status == 400


@pytest.mark.parametrize(
    ("raw", "model", "message"),
    [
        (
            b'{"items": [{"id": 9223372036854775808, "text": "a"}]}',
            UpsertRequest,
            "items.0.id: Input should be less than or equal to 9223372036854775807",
        ),
        (
            b'{"items": [{"id": -1, "text": "a"}]}',
            UpsertRequest,
            "items.0.id: Input should be greater than or equal to 0",
        ),
        (
            b'{"ids": [1, 18446744073709551616]}',
            DeleteRequest,
            "ids.1: Input should be less than or equal to 9223372036854775807",
        ),
        (b'{"ids": [-5]}', DeleteRequest, "ids.0: Input should be greater than or equal to 0"),
    ],
)
def test_ids_outside_int64_are_400(raw: bytes, model: type, message: str) -> None:
    with pytest.raises(APIError, match=message) as error:
        _parse(raw, model)
    assert error.value.status == 400


def test_the_largest_int64_id_is_an_id() -> None:
    assert _parse(b'{"ids": [9223372036854775807]}', DeleteRequest).ids == [2**63 - 1]


def test_json_answers_carry_no_nan_or_infinity() -> None:
    value = {"score": float("nan"), "payload": {"x": [float("inf"), -float("inf"), 1.5]}}
    assert json_bytes(value) == b'{"score":null,"payload":{"x":[null,null,1.5]}}'


def test_good_bodies_parse() -> None:
    request = _parse(
        b'{"vectors": [[1, 2]], "k": 2, "filter": {"topic": ["a", "b"]}}', SearchRequest
    )
    assert request.size == 1 and request.filter == {"topic": ["a", "b"]}
    assert _parse(b'{"texts": ["hello"]}', EmbedRequest).texts == ["hello"]
