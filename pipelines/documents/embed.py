"""Embed: map_batches on an actor pool; each actor loads the shared model once."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa

from pipelines.documents.config import EmbedConfig
from pipelines.documents.steps import DatasetStep, RunContext
from refinery.config import EmbeddingConfig
from refinery.embedding import encode_texts, load_embedder, resolve_precision

if TYPE_CHECKING:
    from ray.data import Dataset

# Encode batches per Ray call: encode sorts a call's texts by length before it batches them,
# so a longer call pads less (as one encode over everything does) and amortises the round
# trip, while a few calls per actor still spread a small input over the pool.
BATCHES_PER_CALL = 4

# Threads per actor when the config leaves it to the cluster: a small encoder gains little
# from more intra-op threads than this, and further actors use the remaining cores better.
MAX_AUTO_THREADS = 4


def embed_resources(
    cfg: EmbedConfig, node_cpus: Sequence[float], free_cpus: float, device: str
) -> tuple[int, float]:
    """(actors, CPUs per actor) for the step: what the config names, the rest from the
    cluster (`node_cpus`: each alive node's CPUs; `free_cpus`: those Ray has free now), so
    that actors x CPUs fill what the cluster offers. Off CPU the defaults stay 1 and 1."""
    if not device.startswith("cpu"):
        return cfg.actors or 1, cfg.cpus_per_actor or 1.0
    free = max(math.floor(free_cpus), 1)
    per_actor = cfg.cpus_per_actor
    if per_actor is None:
        largest = max((math.floor(c) for c in node_cpus), default=1)
        per_actor = float(max(min(largest, MAX_AUTO_THREADS, free), 1))
    actors = cfg.actors
    if actors is None:
        fits = sum(math.floor(c / per_actor + 1e-9) for c in node_cpus)
        actors = max(min(fits, math.floor(free / per_actor + 1e-9)), 1)
    return actors, per_actor


def cluster_cpus(settle_s: float = 2.0) -> tuple[list[float], float]:
    """Each alive node's CPUs and the CPUs Ray has free. The actors of a stage that just
    finished give their CPUs back a moment later, so a cluster that is not all free yet
    is asked again for up to `settle_s`; CPUs held longer (a Serve app) stay counted out."""
    import ray

    nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    deadline = time.monotonic() + settle_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if free >= sum(nodes) or time.monotonic() >= deadline:
            return nodes, free
        time.sleep(0.1)


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """float32 [n, d] -> a fixed-size list column that any Parquet reader understands."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


class Embedder:
    """One per actor: the model loads once; torch uses the actor's CPUs as threads."""

    def __init__(self, cfg: EmbeddingConfig, threads: int) -> None:
        import torch

        # Ray's CPUs are logical (a test cluster may claim more than the machine has):
        # threads beyond the cores this process may run on only contend.
        torch.set_num_threads(max(min(threads, len(os.sched_getaffinity(0))), 1))
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
            actors, per_actor = embed_resources(self.cfg, *cluster_cpus(), embedding.device)
            out = ds.map_batches(
                self.embedder,
                fn_constructor_kwargs={"cfg": embedding, "threads": max(int(per_actor), 1)},
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=per_actor,
                batch_size=embedding.batch_size * BATCHES_PER_CALL,
                batch_format="pyarrow",
                max_restarts=self.cfg.max_restarts,
                max_task_retries=-1,
            ).materialize()
            step.rows_out += out.count()
        ctx.params["embedding"] = {
            "model": embedding.model,
            "batch_size": embedding.batch_size,
            "precision": embedding.precision,
            # As this machine resolves `auto`; each actor resolves it on its own node.
            "precision_here": resolve_precision(embedding.precision, embedding.device),
            "actors": actors,
            "cpus_per_actor": per_actor,
            "max_restarts": self.cfg.max_restarts,
        }
        return out
