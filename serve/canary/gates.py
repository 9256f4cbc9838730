"""The gates a canary must pass at every rollout step, judged on the step's window of counts.

A gate whose metric has no data yet is pending, not failed: a canary that has answered nothing
has done nothing wrong, and failing it would roll back every rollout that starts in a quiet
hour. The rollout holds a step while any gate is pending and rolls back on any failed one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field

from refinery.config import StrictModel
from serve.canary.agreement import Agreement
from serve.canary.window import ArmCounts

GateStatus = Literal["passed", "failed", "pending"]
# A mean that is the threshold (six searches at 4/5 each against 0.8) must pass: summed floats
# land a hair under it.
TOLERANCE = 1e-9


def _reaches(value: float | None, minimum: float) -> bool:
    """Whether a measured share reaches a `min_` gate's threshold."""
    return value is not None and value >= minimum - TOLERANCE


class GateConfig(StrictModel):
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="the canary's 5xx and timeouts must stay below this share"
    )
    max_p99_s: float = Field(2.0, gt=0, description="the canary's p99 latency must stay below")
    min_success_rate: float = Field(
        0.99, ge=0, le=1, description="share of 2xx/3xx answers the canary must reach"
    )
    min_overlap_at_10: float = Field(
        0.8,
        ge=0,
        le=1,
        description="index arms: mean overlap@10 of shadowed searches with stable; "
        "applies only once shadow pairs exist",
    )
    min_shadow_pairs: int = Field(
        20, ge=1, description="shadowed searches before the overlap gate is judged"
    )


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    threshold: float
    status: GateStatus
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(**data)


def _judge(
    name: str, value: float | None, threshold: float, ok: bool, detail: str, pending_why: str
) -> GateResult:
    if value is None:
        return GateResult(name, None, threshold, "pending", pending_why)
    return GateResult(name, value, threshold, "passed" if ok else "failed", detail)


def evaluate(
    canary: ArmCounts, agreement: Agreement | None, cfg: GateConfig, index_arm: bool
) -> list[GateResult]:
    """Every gate on the canary's window. The overlap gate is there only for an index arm with
    shadowed searches: without shadow traffic there is nothing to judge, and holding every
    rollout for data that never comes would be worse than not judging it."""
    error_rate = canary.error_rate
    p99 = canary.quantile(0.99)
    success_rate = canary.success_rate
    no_requests = "no canary requests in this window yet"
    results = [
        _judge(
            "error_rate",
            error_rate,
            cfg.max_error_rate,
            # No error passes even a zero threshold.
            canary.errors == 0 or (error_rate is not None and error_rate < cfg.max_error_rate),
            f"{canary.errors} errors in {canary.requests} requests",
            no_requests,
        ),
        _judge(
            "p99_s",
            p99,
            cfg.max_p99_s,
            p99 is not None and p99 < cfg.max_p99_s,
            f"p99 latency of {canary.requests} requests",
            no_requests,
        ),
        _judge(
            "success_rate",
            success_rate,
            cfg.min_success_rate,
            _reaches(success_rate, cfg.min_success_rate),
            f"{canary.successes} successes in {canary.requests} requests",
            no_requests,
        ),
    ]
    if index_arm and agreement is not None and agreement.search_pairs > 0:
        overlap = agreement.mean_overlap
        if agreement.search_pairs < cfg.min_shadow_pairs:
            overlap = None
        results.append(
            _judge(
                f"overlap_at_{agreement.k}",
                overlap,
                cfg.min_overlap_at_10,
                _reaches(overlap, cfg.min_overlap_at_10),
                f"mean of {agreement.search_pairs} shadowed searches "
                f"({agreement.stable_version} vs {agreement.canary_version})",
                f"{agreement.search_pairs} of {cfg.min_shadow_pairs} shadowed searches",
            )
        )
    return results


def verdict(results: list[GateResult]) -> GateStatus:
    """failed if any gate failed, else pending if any is pending, else passed."""
    if any(result.failed for result in results):
        return "failed"
    if any(result.pending for result in results):
        return "pending"
    return "passed"


def describe_failures(results: list[GateResult]) -> str:
    """One line naming each failed gate with its value and threshold, for the rollback reason."""
    return "; ".join(
        f"{r.name} {r.value:.4g} (threshold {r.threshold:g}: {r.detail})"
        for r in results
        if r.failed and r.value is not None
    )
