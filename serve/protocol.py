"""Typed request and response bodies of the HTTP API (shapes fixed in DESIGN.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A payload filter: field -> value (equality) or list of values (any of them).
PayloadFilter = dict[str, str | int | float | bool | list[str | int | float | bool]]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(Request):
    texts: list[str] | None = None
    vectors: list[list[float]] | None = None
    k: int = Field(10, ge=1)
    filter: PayloadFilter | None = None

    @model_validator(mode="after")
    def _exactly_one_query_kind(self) -> SearchRequest:
        if (self.texts is None) == (self.vectors is None):
            raise ValueError("give exactly one of 'texts' or 'vectors'")
        queries = self.texts if self.texts is not None else self.vectors
        if not queries:
            raise ValueError("'texts' or 'vectors' must hold at least one query")
        return self

    @property
    def size(self) -> int:
        return len(self.texts if self.texts is not None else self.vectors)


class Hit(BaseModel):
    id: int | str
    score: float
    payload: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    results: list[list[Hit]]


class EmbedRequest(Request):
    texts: list[str] = Field(min_length=1)


class EmbedResponse(BaseModel):
    vectors: list[list[float]]
    model: str
    dim: int


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
