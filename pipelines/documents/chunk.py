"""Chunk: documents -> token windows of the embedding model's own tokenizer.

A window is never longer than the model reads: all-MiniLM-L6-v2 stops at 256 word pieces
(its max_seq_length, special tokens included), so a configured 512 becomes 254 and the run
reports the size it used instead of letting the encoder silently cut each chunk in half.
Chunk ids are `<doc id>@<char offset>`: a re-run produces the same ids, so upserts replace.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.documents.config import ChunkConfig
from pipelines.documents.steps import DatasetStep, RunContext
from refinery.embedding import resolve_model_path

if TYPE_CHECKING:
    from ray.data import Dataset
    from transformers import PreTrainedTokenizerBase


@lru_cache(maxsize=2)
def tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def max_tokens(model_path: str) -> int:
    """Content tokens per window the model reads: max_seq_length minus [CLS] and [SEP]."""
    config = Path(model_path) / "sentence_bert_config.json"
    tok = tokenizer(model_path)
    limit = json.loads(config.read_text())["max_seq_length"] if config.exists() else None
    limit = limit or tok.model_max_length
    return limit - tok.num_special_tokens_to_add(pair=False)


def windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges [start, end) covering 0..n_tokens, consecutive ones sharing `overlap`."""
    step = max(size - overlap, 1)
    spans = []
    for start in range(0, max(n_tokens, 1), step):
        spans.append((start, min(start + size, n_tokens)))
        if start + size >= n_tokens:
            break
    return spans if n_tokens else []


def chunk_batch(table: pa.Table, model_path: str, size: int, overlap: int) -> pa.Table:
    tok = tokenizer(model_path)
    texts = table["text"].to_pylist()
    encoded = tok(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    rows: list[dict[str, Any]] = []
    for doc, offsets in zip(table.to_pylist(), encoded["offset_mapping"], strict=True):
        for index, (start, end) in enumerate(windows(len(offsets), size, overlap)):
            begin, finish = offsets[start][0], offsets[end - 1][1]
            rows.append(
                {
                    **doc,
                    "id": f"{doc['doc_id']}@{begin}",
                    "text": doc["text"][begin:finish],
                    "chunk_index": index,
                    "char_start": begin,
                    "char_end": finish,
                    "n_tokens": end - start,
                }
            )
    schema = table.schema
    for name, kind in [("chunk_index", pa.int32()), ("char_start", pa.int64()),
                       ("char_end", pa.int64()), ("n_tokens", pa.int32())]:  # fmt: skip
        schema = schema.append(pa.field(name, kind))
    return pa.Table.from_pylist(rows, schema=schema)


class Chunk(DatasetStep):
    name = "chunk"

    def __init__(self, cfg: ChunkConfig) -> None:
        self.cfg = cfg

    def apply(self, ds: Dataset, ctx: RunContext) -> Dataset:
        model_path = resolve_model_path(ctx.runtime.embedding.model)
        size = min(self.cfg.size, max_tokens(model_path))
        overlap = min(self.cfg.overlap, size // 2)
        with ctx.stats.timed(self.name) as step:
            step.rows_in += ds.count()
            out = ds.map_batches(
                chunk_batch,
                fn_kwargs={"model_path": model_path, "size": size, "overlap": overlap},
                batch_format="pyarrow",
            ).materialize()
            step.rows_out += out.count()
        ctx.params["chunk"] = {"size": self.cfg.size, "effective_size": size, "overlap": overlap}
        return out
