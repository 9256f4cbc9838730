"""Request metrics of the ingress, exported through Ray's metrics API (Prometheus)."""

from __future__ import annotations


class RequestMetrics:
    LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self._requests = Counter(
            "refinery_requests",
            description="HTTP requests by endpoint and status code",
            tag_keys=("endpoint", "status"),
        )
        self._latency = Histogram(
            "refinery_request_latency_ms",
            description="HTTP request latency by endpoint and status code",
            boundaries=self.LATENCY_BOUNDARIES_MS,
            tag_keys=("endpoint", "status"),
        )

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        tags = {"endpoint": endpoint, "status": str(status)}
        self._requests.inc(tags=tags)
        self._latency.observe(seconds * 1000, tags=tags)
