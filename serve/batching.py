"""Run-time @serve.batch settings (the embedder's) and the batch-size metric (the embedder's and
the ingress's index scans)."""

from __future__ import annotations

from typing import Any

from serve.config import BatchingConfig


def apply_batching(batch_method: Any, user_config: dict[str, Any]) -> None:
    """Validate a deployment's user_config and apply it to its @serve.batch method."""
    cfg = BatchingConfig.model_validate(user_config or {})
    batch_method.set_max_batch_size(cfg.max_batch_size)
    batch_method.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)


class BatchSizeMetric:
    """Histogram of batch sizes, exported through Ray's metrics API; for describe(): `largest`,
    and `batches` and `items` so far (their growth over a window gives its mean batch size)."""

    BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]

    def __init__(self) -> None:
        from ray.serve.metrics import Histogram

        # Serve adds the deployment, replica and application tags itself.
        self._histogram = Histogram(
            "refinery_batch_size",
            description="Items per batched call (texts embedded, queries scanned)",
            boundaries=self.BOUNDARIES,
        )
        self.largest = 0
        self.batches = 0
        self.items = 0

    def observe(self, size: int) -> None:
        self._histogram.observe(size)
        self.largest = max(self.largest, size)
        self.batches += 1
        self.items += size
