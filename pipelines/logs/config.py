"""`refinery run logs` config: where the logs are, the query, and what to write."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipelines.logs.schema import MAX_LINE_BYTES
from refinery.config import JobConfig, StrictModel


class QueryConfig(StrictModel):
    filters: dict[str, Any] = Field(
        default_factory=dict,
        description="filter() keywords: col: value | [values], min_col / max_col, since / until",
    )
    by: list[str] = Field(default_factory=lambda: ["model", "route"])
    metrics: dict[str, str] = Field(
        default_factory=lambda: {
            "requests": "count",
            "p50_ms": "p50(latency_ms)",
            "p95_ms": "p95(latency_ms)",
            "error_rate": "error_rate",
            "tokens_per_s": "tokens_per_s",
            "cost": "cost",
        }
    )
    bucket: str | None = Field(None, description="time bucket size (30s, 5m, 1h, 1d) as a key")


class TableConfig(StrictModel):
    format: Literal["parquet", "csv"] = "parquet"
    name: str = Field("aggregate", description="file name without suffix, under the output dir")


class ChartConfig(StrictModel):
    enabled: bool = True
    name: str = "latency.png"
    bucket: str = "1h"
    column: str = "latency_ms"
    percentiles: list[float] = Field(default_factory=lambda: [50, 95, 99])
    top_models: int = Field(6, ge=1, description="plot the busiest models only")


class LogsJobConfig(JobConfig):
    engine: Literal["auto", "arrow", "ray"] = "auto"
    prices: str | None = Field(None, description="price table YAML; None: configs/prices.yaml")
    max_line_bytes: int = Field(
        MAX_LINE_BYTES, ge=1, description="longer lines are quarantined (line_too_long)"
    )
    query: QueryConfig = Field(default_factory=QueryConfig)
    table: TableConfig = Field(default_factory=TableConfig)
    chart: ChartConfig = Field(default_factory=ChartConfig)
