"""The /v1/rag flow, apart from HTTP: embed the question -> retrieve (the native index, or Qdrant
when configured) -> a prompt with numbered sources cut to the model's context -> the LLM ->
the answer with the source ids it cites, whole or as SSE events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from serve.canary.split import STABLE
from serve.checks import check_k
from serve.config import ServeAppConfig
from serve.embed_service import EmbedService
from serve.errors import APIError
from serve.openai_api import DONE_EVENT, OnEnd, OpenAIForwarder
from serve.protocol import Hit, PayloadFilter, RAGRequest, RAGResponse, RAGSource, json_bytes
from serve.qdrant_retriever import QdrantRetriever
from serve.rag import PromptFitter, cited_sources
from serve.search_service import SearchService


def sse(data: dict[str, Any]) -> str:
    return f"data: {json_bytes(data).decode()}\n\n"


class RAGService:
    """RAG over whichever arm the ingress chose: that arm's index snapshot and LLM deployment."""

    def __init__(
        self, cfg: ServeAppConfig, embed: EmbedService, search: SearchService | None
    ) -> None:
        self.cfg = cfg
        self.embed = embed
        self.search = search
        # Loaded on first use: a tokenizer and a Qdrant connection are not free to open.
        self._fitters: dict[str, PromptFitter] = {}
        self._qdrant: QdrantRetriever | None = None

    async def answer(
        self,
        body: RAGRequest,
        llm: OpenAIForwarder,
        arm: str = STABLE,
        on_end: OnEnd | None = None,
    ) -> RAGResponse | AsyncIterator[str]:
        rag = self.cfg.rag
        if self.search is None and not self.cfg.qdrant.enabled:
            raise APIError(404, "not_found_error", "no index is configured for this application")
        check_k(body.k or rag.k, self.cfg.limits)
        vectors = await self.embed.embed([body.question])
        hits = await self.retrieve(vectors, body.k or rag.k, body.filter, arm)
        sources = [
            RAGSource(id=h.payload.get("id", h.id), score=h.score, text=str(h.payload.get("text")))
            for h in hits
        ]
        max_tokens = body.max_tokens or rag.max_tokens
        fitter = await self.fitter(llm)
        messages, used = await asyncio.to_thread(
            fitter.fit, rag.system_prompt, body.question, [s.text for s in sources], max_tokens
        )
        sources = sources[:used]
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        request = ChatCompletionRequest(
            model=llm.model_id,
            messages=messages,
            max_tokens=max_tokens,
            temperature=rag.temperature if body.temperature is None else body.temperature,
            stream=body.stream,
        )
        result = await llm.call("chat", request, on_end)
        if isinstance(result, AsyncIterator):
            return self.events(result, sources, llm.model_id)
        return self.response(result.choices[0].message.content or "", sources, llm.model_id)

    async def retrieve(
        self, vectors: np.ndarray, k: int, payload_filter: PayloadFilter | None, arm: str
    ) -> list[Hit]:
        if not self.cfg.qdrant.enabled:
            snapshot = self.search.arm(arm)
            hits = await self.search.search(vectors, k, payload_filter, snapshot)
            return [Hit(**hit) for hit in hits[0]]
        if self._qdrant is None:
            self._qdrant = await asyncio.to_thread(
                QdrantRetriever, self.cfg.qdrant, self.cfg.storage_root
            )
        return await asyncio.to_thread(self._qdrant.search, vectors[0], k, payload_filter)

    def response(self, answer: str, sources: list[RAGSource], model: str) -> RAGResponse:
        cited = [sources[i].id for i in cited_sources(answer, len(sources))]
        return RAGResponse(answer=answer, sources=sources, cited=cited, model=model)

    async def events(
        self, chat_events: AsyncIterator[str], sources: list[RAGSource], model: str
    ) -> AsyncIterator[str]:
        """The sources first, then answer deltas, then the whole answer with its citations."""
        yield sse({"sources": [s.model_dump() for s in sources]})
        answer = []
        async for event in chat_events:
            payload = event.removeprefix("data: ").strip()
            if not payload or payload == "[DONE]":
                continue
            chunk = json.loads(payload)
            if "error" in chunk:
                yield event
                continue
            for choice in chunk.get("choices", []):
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    answer.append(delta)
                    yield sse({"delta": delta})
        yield sse(self.response("".join(answer), sources, model).model_dump(mode="json"))
        yield DONE_EVENT

    async def fitter(self, llm: OpenAIForwarder) -> PromptFitter:
        """Per model: two arms' models may tokenize apart and hold other context lengths."""
        if llm.model_id not in self._fitters:
            from transformers import AutoTokenizer

            tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, llm.path)
            self._fitters[llm.model_id] = PromptFitter(tokenizer, llm.max_model_len)
        return self._fitters[llm.model_id]
