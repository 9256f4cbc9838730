"""Synthetic LLM request logs for tests, the benchmark and the demo.

Models and routes follow a Zipf law (a few dominate, like real traffic), latencies are
lognormal per model, and about `malformed_rate` of the lines are broken the ways real logs
break (non-JSON, truncated, a wrongly typed field, not an object). Same seed, same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class Noise:
    """How untidy the generated logs are. The defaults are the logs every test and the demo
    have always used (same seed, same bytes); the other settings draw from a second random
    stream, so the known fields stay the same whatever the noise."""

    malformed_rate: float = 0.001
    # none | optional (`region` on some lines) | nested (also `meta`, an object holding a
    # user id, a list of tags and a number, on others)
    extras: str = "optional"
    # mixed (integers now and then, else 2 decimals) | float (full precision, as a logger
    # printing a computed double writes it) | int
    latency: str = "mixed"
    # ascii | unicode (non-ASCII routes and models, each line written with raw UTF-8 or
    # with \u escapes as json.dumps does by default, and a free-text extra with escapes)
    text: str = "ascii"
    newline: str = "\n"


# The noisy variants the bench compares on (and the tests check, smaller).
VARIANTS = {
    "clean": Noise(malformed_rate=0.0, extras="none"),
    "bad0.1": Noise(malformed_rate=0.001),
    "bad1": Noise(malformed_rate=0.01),
    "nested": Noise(malformed_rate=0.003, extras="nested"),
    "float": Noise(malformed_rate=0.003, latency="float"),
    "int": Noise(malformed_rate=0.003, latency="int"),
    "unicode": Noise(malformed_rate=0.003, text="unicode"),
    "crlf": Noise(malformed_rate=0.003, newline="\r\n"),
    "mixed": Noise(
        malformed_rate=0.01, extras="nested", latency="float", text="unicode", newline="\r\n"
    ),
}
UNICODE_MODELS = (*MODELS[:6], "通义千问-32b", "modèle-local")
UNICODE_ROUTES = ("chat", "rag", "résumé", "classify", "extract", "翻訳")
TAGS = ("beta", "eu", "batch", "retry", "vip", "ab-test")
PROMPTS = (
    'Summarise "Q3 report"',
    "Line one\nLine two",
    "Tab\tseparated\tvalues",
    "Résumé – 2 pages",
    "Back\\slash path C:\\logs",
    "日本語の質問です",
    "emoji 🙂 ok",
)


def generate_lines(
    rows: int,
    seed: int = 0,
    malformed_rate: float | None = None,
    hours: float = 24.0,
    start: datetime = START,
    noise: Noise | None = None,
) -> list[str]:
    """`rows` JSONL lines (no line endings), timestamps increasing over `hours` from
    `start`; `malformed_rate`, when given, overrides the noise's."""
    noise = noise or Noise()
    if malformed_rate is not None:
        noise = replace(noise, malformed_rate=malformed_rate)
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
    bad = rng.random(rows) < noise.malformed_rate
    other = np.random.default_rng([seed, 1])
    more = other.random((rows, 4))
    users = other.integers(0, 5000, rows)
    models = UNICODE_MODELS if noise.text == "unicode" else MODELS
    routes = UNICODE_ROUTES if noise.text == "unicode" else ROUTES
    base = start.timestamp()
    lines = []
    for i in range(rows):
        ts = datetime.fromtimestamp(base + seconds[i], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lat = _latency(float(latency[i]), extras[i], noise.latency)
        escape = noise.text == "unicode" and more[i, 0] < 0.5
        line = (
            f'{{"ts": "{ts}", "model": {_text(models[model[i]], escape)}, "latency_ms": {lat}, '
            f'"tokens_input": {tokens_in[i]}, "tokens_output": {tokens_out[i]}, '
            f'"route": {_text(routes[route[i]], escape)}, "status": "{STATUSES[status[i]]}"'
        )
        if extras[i] < 0.3 and noise.extras != "none":  # an extra field on some lines only
            line += f', "region": "{REGIONS[int(extras[i] * 40) % len(REGIONS)]}"'
        if noise.extras == "nested" and more[i, 1] < 0.5:
            user, tries = users[i], users[i] % 3
            tags = ", ".join(f'"{TAGS[(user + k) % len(TAGS)]}"' for k in range(tries))
            line += f', "meta": {{"user": "u{user:04d}", "tags": [{tags}], "attempt": {tries}}}'
        if noise.text == "unicode" and more[i, 2] < 0.2:
            line += f', "prompt": {_text(PROMPTS[users[i] % len(PROMPTS)], escape)}'
        line += "}"
        lines.append(_malformed(rng, line) if bad[i] else line)
    return lines


def _latency(value: float, draw: float, kind: str) -> float | int:
    if kind == "float":
        return value
    if kind == "int" or draw < 0.2:  # real loggers mix 423 and 423.7 in one file
        return round(value)
    return round(value, 2)


def _text(value: str, escape: bool) -> str:
    return json.dumps(value, ensure_ascii=escape)


def write_logs(
    directory: str | Path,
    rows: int,
    files: int = 1,
    seed: int = 0,
    malformed_rate: float | None = None,
    hours: float = 24.0,
    noise: Noise | None = None,
) -> list[str]:
    """Write `rows` lines over `files` files (logs-00000.jsonl, ...); returns their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    newline = (noise or Noise()).newline
    paths = []
    per_file = -(-rows // files)
    for index in range(files):
        # One generator call per file keeps memory bounded for 10M rows; seeds differ per file,
        # and the file's share of the time range keeps timestamps increasing across files.
        n = max(0, min(per_file, rows - index * per_file))
        span = hours / files
        first = START + timedelta(hours=span * index)
        seed_ = seed * 100_003 + index
        lines = generate_lines(n, seed_, malformed_rate, span, first, noise)
        path = out / f"logs-{index:05d}.jsonl"
        path.write_bytes("".join(line + newline for line in lines).encode("utf-8"))
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
