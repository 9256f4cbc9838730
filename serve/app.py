"""The Serve application builder, referenced by configs/serve.yaml (`import_path: serve.app:build`).

`args` are validated against ServeAppConfig; batching settings and the index snapshot go to
their deployments as user_config, so `serve deploy` with new values applies them without a
restart. The LLM is optional: without an `llm` section the chat and RAG endpoints answer 404.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from refinery.config import validate
from refinery.llm import resolve_llm_path
from serve.config import ServeAppConfig
from serve.embedder_deployment import EmbedderDeployment
from serve.index_deployment import IndexDeployment
from serve.ingress import Ingress
from serve.llm_deployment import llm_application


def build(args: dict[str, Any]) -> Application:
    cfg = validate(ServeAppConfig, dict(args), "serve application args")
    embedder = EmbedderDeployment.options(
        user_config=cfg.embedding_batching.model_dump(),
        ray_actor_options={"num_cpus": cfg.embedding.num_cpus},
    ).bind(cfg.embedding.model_dump(exclude={"num_cpus"}))
    index = None
    if cfg.index.snapshot:
        index = IndexDeployment.options(
            user_config=cfg.index.deployment_config(),
            ray_actor_options={"num_cpus": cfg.index.num_cpus},
        ).bind()
    llm = llm_path = None
    if cfg.llm is not None:
        llm_path = resolve_llm_path(cfg.llm.model, cfg.storage_root)
        llm = llm_application(cfg.llm, cfg.storage_root)
    return Ingress.bind(cfg.model_dump(mode="json"), embedder, index, llm, llm_path)
