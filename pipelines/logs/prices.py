"""Per-model token prices (configs/prices.yaml) for the `cost` metric."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field

from refinery.config import CONFIG_DIR, StrictModel, read_yaml, validate

DEFAULT_PRICES = CONFIG_DIR / "prices.yaml"


class ModelPrice(StrictModel):
    input: float = Field(ge=0, description="price per `per_tokens` input tokens")
    output: float = Field(ge=0, description="price per `per_tokens` output tokens")


class PriceTable(StrictModel):
    currency: str = "USD"
    per_tokens: int = Field(1_000_000, ge=1)
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    default: ModelPrice | None = Field(
        None, description="price of models not listed; None: their rows add no cost"
    )

    def lookup(self, model: str | None) -> ModelPrice | None:
        return self.models.get(model, self.default) if model is not None else self.default


def load_prices(path: str | Path | None = None) -> PriceTable:
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        version = path.stat().st_mtime_ns
    except OSError:  # let read_yaml report it as a ConfigError
        version = -1
    return _load(str(path), version)


@functools.lru_cache(maxsize=8)
def _load(path: str, version: int) -> PriceTable:
    # Cached per file version: parsing YAML costs more than a small query.
    return validate(PriceTable, read_yaml(path), path)
