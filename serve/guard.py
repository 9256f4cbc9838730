"""Ingress protection: API keys, body size, and a per-caller token-bucket rate limit."""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from serve.config import API_KEYS_ENV, LimitsConfig
from serve.errors import APIError

ANONYMOUS = "<anonymous>"


def authenticate(authorization: str | None, keys: frozenset[str]) -> str:
    """The caller's key; with no keys configured everyone is ANONYMOUS (the loopback demo).

    The header must be exactly `Bearer <key>`: one space, no other whitespace, so a key has one
    spelling and one rate-limit bucket."""
    if not keys:
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "authentication_error", "missing 'Authorization: Bearer <key>' header")
    # Bytes, not str: compare_digest refuses non-ASCII strings, and a client may send any.
    # Every key is compared, in constant time, so timing reveals nothing about near matches.
    given = token.encode()
    matches = [key for key in keys if hmac.compare_digest(given, key.encode())]
    if not matches:
        raise APIError(401, "authentication_error", "invalid API key")
    return matches[0]


def open_access_warning(host: str, keys: frozenset[str]) -> str | None:
    """What to warn about when serving without keys where other machines can connect: each
    caller is then limited by address only, and anyone may call every endpoint."""
    if keys or _is_loopback(host):
        return None
    return (
        f"serving on {host} without API keys: anyone who reaches it may call every endpoint; "
        f"set api_keys or {API_KEYS_ENV}"
    )


def _is_loopback(host: str) -> bool:
    # A name other than localhost may resolve to any address: taken as reachable.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token buckets per caller. The table holds at most `max_callers` buckets: the one used
    least recently goes first, and an idle caller's bucket has refilled by then anyway."""

    rate: float
    burst: int
    max_callers: int = 10_000
    buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def take(self, caller: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.pop(caller, None) or _Bucket(float(self.burst), now)
        self.buckets[caller] = bucket
        if len(self.buckets) > self.max_callers:
            self.buckets.popitem(last=False)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            raise APIError(
                429, "rate_limit_error", f"rate limit of {self.rate:g} requests/s exceeded"
            )
        bucket.tokens -= 1


def check_body_size(content_length: str | None, limits: LimitsConfig) -> None:
    """Refuse a body its Content-Length declares too large before reading any of it."""
    try:
        size = int(content_length or 0)
    except ValueError:
        raise APIError(400, "invalid_request_error", "Content-Length is not a number") from None
    if size > limits.max_body_bytes:
        raise _too_large(f"body of {size} bytes", limits)


async def read_body(chunks: AsyncIterator[bytes], limits: LimitsConfig) -> bytes:
    """The body, read no further than the limit: a chunked body declares no size up front."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise _too_large("body", limits)
    return bytes(body)


def _too_large(what: str, limits: LimitsConfig) -> APIError:
    limit = limits.max_body_bytes
    return APIError(413, "invalid_request_error", f"{what} exceeds the limit of {limit} bytes")
