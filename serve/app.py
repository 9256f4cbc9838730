"""The Serve application builder, referenced by configs/serve.yaml (`import_path: serve.app:build`).

`args` are validated against ServeAppConfig; batching settings go to each deployment as its
user_config, so `serve deploy` with new values changes them without a restart.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from refinery.config import validate
from serve.config import ServeAppConfig
from serve.embedder_deployment import EmbedderDeployment
from serve.index_deployment import IndexDeployment
from serve.ingress import Ingress


def build(args: dict[str, Any]) -> Application:
    cfg = validate(ServeAppConfig, dict(args), "serve application args")
    embedder = EmbedderDeployment.options(user_config=cfg.embedding_batching.model_dump()).bind(
        cfg.embedding.model_dump()
    )
    index = None
    if cfg.index.snapshot:
        index = IndexDeployment.options(user_config=cfg.index.batching.model_dump()).bind(
            cfg.index.snapshot
        )
    return Ingress.bind(cfg.model_dump(mode="json"), embedder, index)
