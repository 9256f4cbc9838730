"""The Serve application builder, referenced by configs/serve.yaml (`import_path: serve.app:build`).

`args` are validated against ServeAppConfig. The ingress searches the index itself: the snapshot
and its batch size are the ingress's user_config, the embedder's batching its own, so
`serve deploy` with new values applies them without a restart. The LLM is optional: without an
`llm` section the chat and RAG endpoints answer 404; `llm_arms` adds LLM deployments a canary can
route to.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from refinery.config import validate
from refinery.llm import resolve_llm_path
from serve.config import ServeAppConfig
from serve.embedder_deployment import EmbedderDeployment
from serve.ingress import Ingress
from serve.llm_deployment import llm_application


def build(args: dict[str, Any]) -> Application:
    cfg = validate(ServeAppConfig, dict(args), "serve application args")
    embedder = EmbedderDeployment.options(
        num_replicas=cfg.embedding.num_replicas,
        user_config=cfg.embedding_batching.model_dump(),
        ray_actor_options={"num_cpus": cfg.embedding.num_cpus},
    ).bind(cfg.embedding.model_args())
    # One deployment per LLM (`llm` and each of `llm_arms`), by model_id: the arms choose.
    llms = {llm.model_id: llm_application(llm, cfg.storage_root) for llm in cfg.llms}
    paths = {llm.model_id: resolve_llm_path(llm.model, cfg.storage_root) for llm in cfg.llms}
    ingress = Ingress.options(
        num_replicas=cfg.ingress.num_replicas,
        ray_actor_options={"num_cpus": cfg.ingress.num_cpus},
        user_config=cfg.ingress_user_config(),
    )
    return ingress.bind(cfg.model_dump(mode="json"), embedder, llms, paths)
