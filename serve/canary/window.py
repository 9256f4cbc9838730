"""Per-arm request statistics: each replica counts what its arms answered, the controller merges
the replicas' counts and judges a rollout step on the window between two snapshots.

Every count is cumulative (it only grows while a process lives), so a lost or repeated poll
changes nothing: a window is the difference of two snapshots. Latencies go into fixed histogram
buckets, the same the Prometheus histogram uses, so counts from any number of replicas add up
and a quantile comes from the sum; a list of raw latencies would neither merge nor stay small.
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (inclusive, Prometheus `le`) of the latency buckets; the last one catches the rest.
# 2 s is a bound because it is the default p99 gate: the estimate is exact at the threshold.
# Prometheus takes the finite ones: `LATENCY_BUCKETS_S[:-1]`.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    math.inf,
)

# A request that timed out on the server answers 408 or 504; both count as the arm's error.
TIMEOUT_STATUSES = frozenset({408, 504})


def is_error(status: int) -> bool:
    """5xx and timeouts are the arm's fault; other 4xx are the caller's and are no error."""
    return status >= 500 or status in TIMEOUT_STATUSES


def bucket_index(latency_s: float) -> int:
    return bisect_left(LATENCY_BUCKETS_S, max(latency_s, 0.0))


def _zero_buckets() -> list[int]:
    return [0] * len(LATENCY_BUCKETS_S)


@dataclass
class ArmCounts:
    """Cumulative counts of one arm. `successes` are 2xx/3xx answers: with `errors` it tells a
    canary that rejects good requests (a 4xx regression) from one that fails them."""

    requests: int = 0
    successes: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=_zero_buckets)
    latency_sum_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0

    def __post_init__(self) -> None:
        if len(self.buckets) != len(LATENCY_BUCKETS_S):
            raise ValueError(
                f"{len(self.buckets)} latency buckets, expected {len(LATENCY_BUCKETS_S)} "
                "(LATENCY_BUCKETS_S)"
            )

    def record(self, status: int, latency_s: float) -> None:
        """One answered request; failures count in the latency too, as the client waited for
        them all the same."""
        self.requests += 1
        if status < 400:
            self.successes += 1
        if is_error(status):
            self.errors += 1
        self.buckets[bucket_index(latency_s)] += 1
        self.latency_sum_s += max(latency_s, 0.0)

    def add_tokens(self, tokens_in: int, tokens_out: int) -> None:
        """An LLM answer's prompt and completion tokens (a stream's are known at its end)."""
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out

    def _scalars(self) -> tuple[float, ...]:
        return (
            self.requests,
            self.successes,
            self.errors,
            self.latency_sum_s,
            self.tokens_in,
            self.tokens_out,
        )

    def merged(self, other: ArmCounts) -> ArmCounts:
        return ArmCounts(
            requests=self.requests + other.requests,
            successes=self.successes + other.successes,
            errors=self.errors + other.errors,
            buckets=[a + b for a, b in zip(self.buckets, other.buckets, strict=True)],
            latency_sum_s=self.latency_sum_s + other.latency_sum_s,
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
        )

    __add__ = merged

    def minus(self, earlier: ArmCounts) -> ArmCounts:
        """What was counted since `earlier`. A count below its earlier value means the process
        restarted and began again from zero, so everything it holds is new."""
        scalars_fell = any(
            now < then for now, then in zip(self._scalars(), earlier._scalars(), strict=True)
        )
        buckets_fell = any(
            now < then for now, then in zip(self.buckets, earlier.buckets, strict=True)
        )
        if scalars_fell or buckets_fell:
            return self.copy()
        return ArmCounts(
            requests=self.requests - earlier.requests,
            successes=self.successes - earlier.successes,
            errors=self.errors - earlier.errors,
            buckets=[a - b for a, b in zip(self.buckets, earlier.buckets, strict=True)],
            latency_sum_s=self.latency_sum_s - earlier.latency_sum_s,
            tokens_in=self.tokens_in - earlier.tokens_in,
            tokens_out=self.tokens_out - earlier.tokens_out,
        )

    def copy(self) -> ArmCounts:
        return ArmCounts.from_dict(self.to_dict())

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.requests if self.requests else None

    @property
    def mean_latency_s(self) -> float | None:
        return self.latency_sum_s / self.requests if self.requests else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the latency, None without requests. As Prometheus'
        histogram_quantile: linear within the bucket that holds the rank, and the largest finite
        bound when the rank falls in the last, unbounded bucket."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        total = sum(self.buckets)
        if total == 0:
            return None
        rank = q * total
        below = 0
        for index, count in enumerate(self.buckets):
            # An empty bucket cannot hold the rank (and would divide by zero at q = 0).
            if count and below + count >= rank:
                upper = LATENCY_BUCKETS_S[index]
                if math.isinf(upper):
                    return LATENCY_BUCKETS_S[index - 1] if index else 0.0
                lower = LATENCY_BUCKETS_S[index - 1] if index else 0.0
                return lower + (upper - lower) * (rank - below) / count
            below += count
        raise AssertionError("unreachable: the last non-empty bucket holds every rank")

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "buckets": list(self.buckets),
            "latency_sum_s": self.latency_sum_s,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmCounts:
        return cls(
            requests=int(data.get("requests", 0)),
            successes=int(data.get("successes", 0)),
            errors=int(data.get("errors", 0)),
            buckets=[int(n) for n in data.get("buckets") or _zero_buckets()],
            latency_sum_s=float(data.get("latency_sum_s", 0.0)),
            tokens_in=int(data.get("tokens_in", 0)),
            tokens_out=int(data.get("tokens_out", 0)),
        )


def new_origin() -> str:
    return uuid.uuid4().hex


@dataclass
class ArmStats:
    """Arm name -> its counts. `origin` names the process lifetime whose counter this is (a
    replica, or the controller's Tally): counts of another origin cannot be subtracted, because
    they never started from the same zero. "" means unknown, e.g. a sum of several origins."""

    arms: dict[str, ArmCounts] = field(default_factory=dict)
    origin: str = ""

    def __getitem__(self, arm: str) -> ArmCounts:
        """An arm that answered nothing has empty counts, not a KeyError."""
        return self.arms.get(arm) or ArmCounts()

    def record(self, arm: str, status: int, latency_s: float) -> None:
        self.arms.setdefault(arm, ArmCounts()).record(status, latency_s)

    def add_tokens(self, arm: str, tokens_in: int, tokens_out: int) -> None:
        self.arms.setdefault(arm, ArmCounts()).add_tokens(tokens_in, tokens_out)

    def merged(self, other: ArmStats) -> ArmStats:
        arms = {name: counts.copy() for name, counts in self.arms.items()}
        for name, counts in other.arms.items():
            arms[name] = arms[name].merged(counts) if name in arms else counts.copy()
        return ArmStats(arms, self.origin if self.origin == other.origin else "")

    __add__ = merged

    def minus(self, earlier: ArmStats) -> ArmStats:
        """Per arm, what was counted since `earlier`; all of `self` when the origins differ."""
        if self.origin != earlier.origin:
            return self.copy()
        return ArmStats(
            {name: counts.minus(earlier[name]) for name, counts in self.arms.items()},
            self.origin,
        )

    def copy(self) -> ArmStats:
        return ArmStats.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "arms": {name: counts.to_dict() for name, counts in self.arms.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmStats:
        arms = data.get("arms") or {}
        return cls(
            {name: ArmCounts.from_dict(counts) for name, counts in arms.items()},
            str(data.get("origin", "")),
        )


class Tally:
    """The controller's running total of its replicas' cumulative snapshots, keyed by replica.

    Summing the replicas' snapshots directly would hide a restart: a replica falling back to zero
    while the others grow makes the sum smaller than it should be, never smaller than before.
    So each replica's snapshot is diffed against its own previous one, and the differences add
    up in a total that only grows. A replica's first snapshot is its baseline and counts nothing,
    whenever it comes: the Tally cannot know how much of what a replica holds came before it
    (a controller started anew hears from long-running replicas one by one). A replica started
    since loses its first report's counts, about a second of its traffic."""

    def __init__(self) -> None:
        self.total = ArmStats(origin=new_origin())
        self._last: dict[str, ArmStats] = {}

    def observe(self, snapshots: Mapping[str, ArmStats]) -> ArmStats:
        """Add one poll of replica id -> cumulative snapshot; returns the new total. A replica
        missing from a poll keeps its last snapshot, so that its return is not counted twice."""
        for replica, snapshot in snapshots.items():
            previous = self._last.get(replica)
            if previous is not None:
                delta = snapshot.minus(previous)
                self.total = ArmStats(self.total.merged(delta).arms, self.total.origin)
            self._last[replica] = snapshot.copy()
        return self.total.copy()
