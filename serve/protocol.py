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


# A Hit as a plain dict, as the index replica answers it: {"id", "score", "payload"}.
HitDict = dict[str, Any]


class EmbedRequest(Request):
    texts: list[str] = Field(min_length=1)


class EmbedResponse(BaseModel):
    vectors: list[list[float]]
    model: str
    dim: int


class RAGRequest(Request):
    question: str = Field(min_length=1)
    k: int | None = Field(None, ge=1, description="sources to retrieve; default from config")
    filter: PayloadFilter | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    stream: bool = False


class RAGSource(BaseModel):
    id: int | str
    score: float
    text: str


class RAGResponse(BaseModel):
    answer: str
    sources: list[RAGSource]
    cited: list[int | str] = Field(description="ids of the sources the answer cites as [n]")
    model: str


class UpsertItem(Request):
    id: int = Field(ge=0, description="the index id; an existing id is replaced")
    vector: list[float] | None = None
    text: str | None = Field(None, description="embedded when no vector is given")
    payload: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _vector_or_text(self) -> UpsertItem:
        if self.vector is None and not (self.text or "").strip():
            raise ValueError("give a 'vector' or a non-empty 'text'")
        return self


class UpsertRequest(Request):
    items: list[UpsertItem] = Field(min_length=1)


class DeleteRequest(Request):
    ids: list[int] = Field(min_length=1)


class UpdateResponse(BaseModel):
    upserted: int = 0
    deleted: int = 0
    count: int = Field(description="vectors in the index after the update")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
