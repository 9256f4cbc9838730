"""Ingress protection: API keys, body size, and a per-key token-bucket rate limit."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from serve.config import LimitsConfig
from serve.errors import APIError

ANONYMOUS = "<anonymous>"


def authenticate(authorization: str | None, keys: frozenset[str]) -> str:
    """The caller's key; with no keys configured everyone is ANONYMOUS (the loopback demo)."""
    if not keys:
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "authentication_error", "missing 'Authorization: Bearer <key>' header")
    # Compare against every key in constant time so timing reveals nothing about near matches.
    if not any(hmac.compare_digest(token.strip(), key) for key in keys):
        raise APIError(401, "authentication_error", "invalid API key")
    return token


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    rate: float
    burst: int
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.setdefault(key, _Bucket(float(self.burst), now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            raise APIError(
                429, "rate_limit_error", f"rate limit of {self.rate:g} requests/s exceeded"
            )
        bucket.tokens -= 1


def check_body_size(content_length: str | None, body: bytes | None, limits: LimitsConfig) -> None:
    size = len(body) if body is not None else int(content_length or 0)
    if size > limits.max_body_bytes:
        raise APIError(
            413, "invalid_request_error", f"body of {size} bytes exceeds {limits.max_body_bytes}"
        )
