"""LLMDeployment: vLLM inside Ray Serve through ray.serve.llm's LLMServer.

Ray's server owns the engine life cycle (placement group, start-up, health checks, vLLM's
metrics through Ray's metrics API); the ingress in front of it adds Refinery's keys, limits and
error shapes and speaks the OpenAI protocol (serve/openai_api.py).
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from refinery.llm import vllm_engine_kwargs
from serve.config import ServeLLMConfig

DEPLOYMENT_PREFIX = "LLMDeployment:"


def placement_bundles(cfg: ServeLLMConfig) -> list[dict[str, float]]:
    """One bundle per tensor-parallel worker; the first also holds the replica's CPUs."""
    if cfg.num_gpus == 0:
        return [{"CPU": cfg.num_cpus}]
    return [{"CPU": cfg.num_cpus, "GPU": 1}] + [{"GPU": 1}] * (cfg.tensor_parallel_size - 1)


def llm_application(cfg: ServeLLMConfig, storage_root: str) -> Application:
    from ray.serve.llm import LLMConfig, build_llm_deployment

    engine: dict[str, Any] = vllm_engine_kwargs(cfg, storage_root)
    source = engine.pop("model")
    llm_config = LLMConfig(
        model_loading_config={"model_id": cfg.model_id, "model_source": source},
        engine_kwargs=engine,
        placement_group_config={"bundles": placement_bundles(cfg)},
        # The replica sits in the engine's first bundle; its own CPU would be added on top.
        deployment_config={
            "max_ongoing_requests": cfg.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": 0},
        },
        log_engine_metrics=True,
    )
    return build_llm_deployment(llm_config, name_prefix=DEPLOYMENT_PREFIX)
