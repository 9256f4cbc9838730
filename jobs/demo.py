"""The stages of `refinery demo`, in order. Each yields the lines it prints; later stages may
use what earlier ones put on the context (the Ray session, the model path, job outputs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refinery.config import RuntimeConfig, load_runtime
from refinery.llm import vllm_engine_kwargs
from refinery.ray_runtime import init_ray


@dataclass
class DemoContext:
    output: Path
    runtime: RuntimeConfig
    profile: str
    results: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, output: str, profile: str) -> DemoContext:
        out = Path(output).resolve()
        out.mkdir(parents=True, exist_ok=True)
        return cls(out, load_runtime(profile), profile)


@dataclass(frozen=True)
class DemoStage:
    title: str
    run: Callable[[DemoContext], Iterator[str]]


def start_ray(ctx: DemoContext) -> Iterator[str]:
    import ray

    init_ray(ctx.runtime.ray)
    resources = ray.cluster_resources()
    yield f"Ray {ray.__version__}: {len(ray.nodes())} node(s), {resources.get('CPU', 0):.0f} CPUs"


def generate_with_tiny_llm(ctx: DemoContext) -> Iterator[str]:
    from vllm import LLM, SamplingParams

    engine = vllm_engine_kwargs(ctx.runtime.llm, ctx.runtime.storage.root)
    yield f"model directory: {engine['model']}"
    llm = LLM(**engine)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    messages = [{"role": "user", "content": "What does Refinery do?"}]
    output = llm.chat(messages, params)[0].outputs[0]
    ctx.results["tiny_llm_token_ids"] = list(output.token_ids)
    yield f"vLLM {_vllm_version()} generated token ids {list(output.token_ids)}"
    yield f"text (random weights, so gibberish): {output.text!r}"


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


DEMO_STAGES: list[DemoStage] = [
    DemoStage("start a local Ray", start_ray),
    DemoStage("run the real vLLM engine on the tiny local model", generate_with_tiny_llm),
]
