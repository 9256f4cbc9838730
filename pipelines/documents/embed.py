"""Embed: map_batches on an actor pool; each actor loads the shared model once."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa

from pipelines.documents.config import EmbedConfig
from pipelines.documents.steps import DatasetStep, RunContext
from refinery.config import EmbeddingConfig
from refinery.embedding import encode_texts, load_embedder

if TYPE_CHECKING:
    from ray.data import Dataset

# Encode batches per Ray call: encode sorts a call's texts by length before it batches them,
# so a longer call pads less (as one encode over everything does) and amortises the round
# trip, while a few calls per actor still spread a small input over the pool.
BATCHES_PER_CALL = 4


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """float32 [n, d] -> a fixed-size list column that any Parquet reader understands."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


class Embedder:
    """One per actor: the model loads once; torch uses the actor's CPUs as threads."""

    def __init__(self, cfg: EmbeddingConfig, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.cfg = cfg
        self.model = load_embedder(cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        vectors = encode_texts(self.model, table["text"].to_pylist(), self.cfg)
        return table.append_column("vector", vector_column(vectors))


class Embed(DatasetStep):
    """A dead actor (killed, out of memory) is restarted up to `max_restarts` times and
    the batches it held run again on it: Ray keeps the finished batches, and encoding a
    batch again gives the same vectors."""

    name = "embed"
    embedder: ClassVar[type[Embedder]] = Embedder

    def __init__(self, cfg: EmbedConfig) -> None:
        self.cfg = cfg

    def apply(self, ds: Dataset, ctx: RunContext) -> Dataset:
        import ray

        embedding = ctx.runtime.embedding
        if self.cfg.batch_size:
            embedding = embedding.model_copy(update={"batch_size": self.cfg.batch_size})
        with ctx.stats.timed(self.name) as step:
            step.rows_in += ds.count()
            out = ds.map_batches(
                self.embedder,
                fn_constructor_kwargs={
                    "cfg": embedding,
                    "threads": max(int(self.cfg.cpus_per_actor), 1),
                },
                compute=ray.data.ActorPoolStrategy(size=self.cfg.actors),
                num_cpus=self.cfg.cpus_per_actor,
                batch_size=embedding.batch_size * BATCHES_PER_CALL,
                batch_format="pyarrow",
                max_restarts=self.cfg.max_restarts,
                max_task_retries=-1,
            ).materialize()
            step.rows_out += out.count()
        ctx.params["embedding"] = {
            "model": embedding.model,
            "batch_size": embedding.batch_size,
            "actors": self.cfg.actors,
            "cpus_per_actor": self.cfg.cpus_per_actor,
            "max_restarts": self.cfg.max_restarts,
        }
        return out
