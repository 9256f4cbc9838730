"""Per-run statistics every batch job writes to DIR/stats.json and logs to MLflow.

Each step records rows in and out, time spent, and a count per drop rule or quarantine
reason, so "why did my document disappear" has an answer in every run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from refinery.storage import write_text


class JobRejected(RuntimeError):
    """A job that ran to its end and refused its own result (a reindexed version that failed
    validation): the run is FAILED and the message says why, but nothing crashed."""


@dataclass
class StepStats:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    seconds: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        rate = self.rows_in / self.seconds if self.seconds > 0 else None
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "seconds": round(self.seconds, 4),
            "rows_per_s": round(rate, 2) if rate is not None else None,
            "dropped": dict(sorted(self.dropped.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
        }


class RunStats:
    def __init__(self, job: str, run_id: str | None = None) -> None:
        self.job = job
        self.run_id = run_id
        self.started_at = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self.steps: dict[str, StepStats] = {}
        self.extra: dict[str, Any] = {}
        self.status = "RUNNING"

    def step(self, name: str) -> StepStats:
        if name not in self.steps:
            self.steps[name] = StepStats(name)
        return self.steps[name]

    @contextmanager
    def timed(self, name: str) -> Iterator[StepStats]:
        step = self.step(name)
        t0 = time.perf_counter()
        try:
            yield step
        finally:
            step.seconds += time.perf_counter() - t0

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": self.status,
            "mlflow_run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "seconds": round(time.perf_counter() - self._t0, 4),
            "steps": {name: step.to_dict() for name, step in self.steps.items()},
            **self.extra,
        }

    def metrics(self) -> dict[str, float]:
        """Flat numeric view for MLflow: steps.<step>.<count> and dropped/quarantined per reason."""
        flat: dict[str, float] = {}
        for name, step in self.steps.items():
            for key, value in step.to_dict().items():
                if isinstance(value, Mapping):
                    flat.update({f"{name}.{key}.{reason}": n for reason, n in value.items()})
                elif value is not None:
                    flat[f"{name}.{key}"] = value
        return {_metric_key(k): float(v) for k, v in flat.items()}

    def write(self, output_dir: str) -> str:
        path = f"{output_dir.rstrip('/')}/stats.json"
        write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return path


def _metric_key(key: str) -> str:
    # MLflow keys allow alphanumerics, _ - . / and spaces only.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)
