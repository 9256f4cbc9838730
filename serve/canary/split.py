"""Which arm answers a request: a tester's forced arm, else the canary's weight applied to a
bucket of the request's key.

A key (the `X-Route-Key` header, else the API key) falls in one of 100 buckets and the canary
answers buckets below its weight, so a key that reached the canary stays there while the
weight grows: one user sees one version through the whole rollout. The buckets are salted
with the canary's version, so each rollout tries its canary on another set of users. A request
with no key gets a bucket of its own.
"""

from __future__ import annotations

import hashlib
import random

from serve.errors import bad_request

STABLE, CANARY = "stable", "canary"
ARMS = (STABLE, CANARY)
ROUTE_KEY_HEADER = "X-Route-Key"
FORCE_ARM_HEADER = "X-Refinery-Arm"


def bucket(key: str, salt: str) -> int:
    """0-99, the same for a key and salt in every process (Python's hash() is per process)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "little") % 100


def choose_arm(weight: int, canary_version: str | None, key: str | None, forced: str | None) -> str:
    """`canary_version` None: no canary is serving, so only stable can answer."""
    if forced is not None:
        return _forced_arm(forced, canary_version)
    if canary_version is None or weight <= 0:
        return STABLE
    drawn = bucket(key, canary_version) if key is not None else random.randrange(100)
    return CANARY if drawn < weight else STABLE


def _forced_arm(forced: str, canary_version: str | None) -> str:
    arm = forced.strip().lower()
    if arm not in ARMS:
        raise bad_request(f"{FORCE_ARM_HEADER} must be one of {', '.join(ARMS)}, got {forced!r}")
    if arm == CANARY and canary_version is None:
        raise bad_request(f"{FORCE_ARM_HEADER}: canary, but no canary is serving")
    return arm
