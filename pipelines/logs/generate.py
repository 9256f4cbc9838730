"""Synthetic LLM request logs for tests, the benchmark and the demo.

Models and routes follow a Zipf law (a few dominate, like real traffic), latencies are
lognormal per model, and about `malformed_rate` of the lines are broken the ways real logs
break (non-JSON, truncated, a wrongly typed field, not an object). Same seed, same bytes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

MODELS = (
    "gpt-4.1",
    "gpt-4.1-mini",
    "claude-sonnet-4",
    "llama-3.1-70b",
    "gemini-2.5-pro",
    "mistral-large",
    "qwen3-32b",
    "tiny-local",
)
ROUTES = ("chat", "rag", "summarize", "classify", "extract", "translate")
STATUSES = ("ok", "error", "timeout", "rate_limited")
REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")
START = datetime(2024, 1, 1, tzinfo=UTC)


def _zipf_choice(rng: np.random.Generator, n: int, k: int, s: float = 1.2) -> np.ndarray:
    weights = 1.0 / np.arange(1, k + 1) ** s
    return rng.choice(k, size=n, p=weights / weights.sum())


def _malformed(rng: np.random.Generator, line: str) -> str:
    kind = rng.integers(4)
    if kind == 0:  # truncated mid-record, as when a writer dies
        return line[: int(rng.integers(1, len(line) - 1))]
    if kind == 1:
        return "ERROR upstream timed out: <html>502 Bad Gateway</html>"
    if kind == 2:
        return line.replace('"latency_ms": ', '"latency_ms": "abc", "_was": ', 1)
    return "[" + line + "]"


def generate_lines(
    rows: int,
    seed: int = 0,
    malformed_rate: float = 0.001,
    hours: float = 24.0,
    start: datetime = START,
) -> list[str]:
    """`rows` JSONL lines (no newlines), timestamps increasing over `hours` from `start`."""
    rng = np.random.default_rng(seed)
    model = _zipf_choice(rng, rows, len(MODELS))
    route = _zipf_choice(rng, rows, len(ROUTES))
    # Larger models are slower: the median latency grows with the model's index.
    latency = rng.lognormal(mean=5.5 + 0.25 * model, sigma=0.6)
    tokens_in = rng.lognormal(6.0, 1.0, rows).astype(np.int64) + 1
    tokens_out = rng.lognormal(5.0, 0.8, rows).astype(np.int64) + 1
    status = rng.choice(len(STATUSES), size=rows, p=(0.96, 0.02, 0.015, 0.005))
    seconds = np.sort(rng.uniform(0, hours * 3600, rows))
    extras = rng.random(rows)
    bad = rng.random(rows) < malformed_rate
    base = start.timestamp()
    lines = []
    for i in range(rows):
        ts = datetime.fromtimestamp(base + seconds[i], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # Integer latencies now and then: real loggers mix 423 and 423.7 in one file.
        lat = round(float(latency[i])) if extras[i] < 0.2 else round(float(latency[i]), 2)
        line = (
            f'{{"ts": "{ts}", "model": "{MODELS[model[i]]}", "latency_ms": {lat}, '
            f'"tokens_input": {tokens_in[i]}, "tokens_output": {tokens_out[i]}, '
            f'"route": "{ROUTES[route[i]]}", "status": "{STATUSES[status[i]]}"'
        )
        if extras[i] < 0.3:  # an extra field on some lines only
            line += f', "region": "{REGIONS[int(extras[i] * 40) % len(REGIONS)]}"'
        line += "}"
        lines.append(_malformed(rng, line) if bad[i] else line)
    return lines


def write_logs(
    directory: str | Path,
    rows: int,
    files: int = 1,
    seed: int = 0,
    malformed_rate: float = 0.001,
    hours: float = 24.0,
) -> list[str]:
    """Write `rows` lines over `files` files (logs-00000.jsonl, ...); returns their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = -(-rows // files)
    for index in range(files):
        # One generator call per file keeps memory bounded for 10M rows; seeds differ per file,
        # and the file's share of the time range keeps timestamps increasing across files.
        n = max(0, min(per_file, rows - index * per_file))
        span = hours / files
        first = START + timedelta(hours=span * index)
        lines = generate_lines(n, seed * 100_003 + index, malformed_rate, span, first)
        path = out / f"logs-{index:05d}.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        paths.append(str(path))
    return paths


def quirky_lines() -> list[str]:
    """Valid but unusual lines every parser must keep: nulls, missing fields, unicode, epoch
    and offset timestamps, int vs float, nested extras."""
    records = [
        {
            "ts": "2024-01-01T12:00:00+02:00",
            "model": "gpt-4.1",
            "latency_ms": 100,
            "tokens_input": 10,
            "tokens_output": 20,
            "route": "chat",
            "status": "ok",
        },
        {
            "ts": 1704110400,
            "model": "gpt-4.1",
            "latency_ms": 250.5,
            "tokens_input": 5,
            "tokens_output": 7,
            "route": "rag",
            "status": "error",
        },
        {
            "ts": "2024-01-01T10:30:00Z",
            "model": "modèle-ü",
            "latency_ms": None,
            "tokens_input": 1,
            "tokens_output": None,
            "route": "chat",
            "status": "ok",
            "user": "ユーザー",
            "meta": {"k": 1},
        },
        {
            "ts": "2024-01-01T11:00:00.5Z",
            "model": "gpt-4.1",
            "latency_ms": 300.0,
            "route": "chat",
            "status": None,
            "region": "eu-west",
        },
    ]
    return [json.dumps(record, ensure_ascii=False) for record in records]


def generate_demo_logs(directory: str | Path) -> list[str]:
    """The demo's input: a day of traffic, 50,000 lines over 4 files with about 0.1% malformed,
    plus a file of valid-but-quirky lines; returns the file paths."""
    paths = write_logs(directory, rows=50_000, files=4, seed=2024)
    quirky = Path(directory) / "quirky.jsonl"
    quirky.write_text("".join(line + "\n" for line in quirky_lines()), encoding="utf-8")
    return [*paths, str(quirky)]
