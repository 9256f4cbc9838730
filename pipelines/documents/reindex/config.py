"""The reindex job's own section (`reindex:` in configs/reindex.yaml), beside the document
job's `read`, `steps` and `write`, which the reindex runs unchanged up to the embed step."""

from __future__ import annotations

import re

from pydantic import Field

from pipelines.documents.config import DocsJobConfig
from refinery.config import StrictModel
from refinery.registry import DEFAULT_NAME

# How pipelines.documents.write.new_version names a version: folders and collections of
# versions are told apart from anything else by it.
VERSION_NAME = re.compile(r"v\d{8}T\d{6}-[0-9a-f]{6}")


class RegistryRef(StrictModel):
    uri: str | None = Field(
        None, description="MLflow tracking URI of the index registry; null: the runtime's tracking"
    )
    name: str = Field(DEFAULT_NAME, description="the registered model of the index versions")


class ValidationConfig(StrictModel):
    max_count_change: float = Field(
        0.2,
        ge=0,
        description="largest relative change of the document and of the chunk count from the "
        "champion's",
    )
    k: int = Field(10, ge=1, description="the k of recall@k and overlap@k")
    sample: int = Field(
        200, ge=1, description="vectors of the new version used as queries by both checks"
    )
    min_recall: float = Field(
        0.95, ge=0, le=1, description="recall@k of the written index against exact search"
    )
    min_overlap: float = Field(
        0.6, ge=0, le=1, description="mean overlap@k of the new version with the champion"
    )
    smoke_queries: list[str] = Field(
        default_factory=lambda: ["how do I install it", "what does this function return"],
        description="texts embedded by the configured model; each must find smoke_min_hits hits",
    )
    smoke_min_hits: int = Field(1, ge=0)


class ReindexConfig(StrictModel):
    champion: str | None = Field(
        None,
        description="the serving version to diff against: a snapshot directory or a models:/ "
        "URI; null: models:/NAME@champion of `registry`",
    )
    registry: RegistryRef = Field(default_factory=RegistryRef)
    full: bool = Field(False, description="embed every chunk, reusing no vector")
    update_log: str | None = Field(
        None, description="the real-time update log to fold in; null: the one beside the champion"
    )
    keep_versions: int = Field(
        3,
        ge=1,
        description="version folders kept under the output (those an alias names are kept too)",
    )
    embed_in_driver_max: int = Field(
        256,
        ge=0,
        description="at most this many chunks to embed are embedded in the job's process, by the "
        "model validation loads anyway, instead of starting the embed step's actor pool",
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig)


class ReindexJobConfigBase(DocsJobConfig):
    """What the build reads; the job's config (jobs/reindex.py) adds the rollout's settings."""

    reindex: ReindexConfig = Field(default_factory=ReindexConfig)
