"""Request metrics of the ingress, exported through Ray's metrics API (Prometheus), by endpoint,
status and the arm (stable or canary) that answered; LLM tokens by arm."""

from __future__ import annotations


class RequestMetrics:
    LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self._requests = Counter(
            "refinery_requests",
            description="HTTP requests by endpoint, status code and arm",
            tag_keys=("endpoint", "status", "arm"),
        )
        self._latency = Histogram(
            "refinery_request_latency_ms",
            description="HTTP request latency by endpoint, status code and arm",
            boundaries=self.LATENCY_BOUNDARIES_MS,
            tag_keys=("endpoint", "status", "arm"),
        )
        self._tokens = Counter(
            "refinery_llm_tokens",
            description="LLM tokens by arm and kind: prompt (in) or completion (out)",
            tag_keys=("arm", "kind"),
        )

    def record(self, endpoint: str, status: int, seconds: float, arm: str) -> None:
        tags = {"endpoint": endpoint, "status": str(status), "arm": arm}
        self._requests.inc(tags=tags)
        self._latency.observe(seconds * 1000, tags=tags)

    def record_tokens(self, arm: str, prompt: int, completion: int) -> None:
        if prompt:
            self._tokens.inc(prompt, tags={"arm": arm, "kind": "prompt"})
        if completion:
            self._tokens.inc(completion, tags={"arm": arm, "kind": "completion"})
