"""Typed request and response bodies of the HTTP API (the shapes the README documents)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator
from pydantic_core import PydanticCustomError, to_json

# The native index's ids are int64; upserts take the non-negative ones.
INT64_MAX = 2**63 - 1
IndexId = Annotated[int, Field(ge=0, le=INT64_MAX)]

FilterValue = str | int | float | bool


def _check_filter(value: Any) -> dict[str, Any]:
    """One plain message for a filter of the wrong shape (pydantic would list every member of
    the union). Whether a value fits its field's type is for the snapshot to say: only it knows
    the columns."""
    if not isinstance(value, dict):
        raise PydanticCustomError("filter", "expected an object of field -> value(s)")
    for field, wanted in value.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values:  # it would match nothing: surely a mistake, not a query
            raise PydanticCustomError(
                "filter", "field '{field}' has an empty list of values", {"field": field}
            )
        if not all(isinstance(v, FilterValue) for v in values):
            raise PydanticCustomError(
                "filter",
                "field '{field}': a value is a string, number or boolean, or a list of them",
                {"field": field},
            )
    return value


# A payload filter: field -> value (equality) or list of values (any of them).
PayloadFilter = Annotated[dict[str, FilterValue | list[FilterValue]], PlainValidator(_check_filter)]


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
    id: IndexId = Field(description="the index id; an existing id is replaced")
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
    ids: list[IndexId] = Field(min_length=1)


class UpdateResponse(BaseModel):
    upserted: int = 0
    deleted: int = 0
    count: int = Field(description="vectors in the index after the update")


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


def json_bytes(value: Any) -> bytes:
    """JSON for any answer or event. NaN and infinities are not JSON: they go out as null (a
    payload or a score may hold one; a Python encoder would write a bare NaN, or fail)."""
    return to_json(value, inf_nan_mode="null")
