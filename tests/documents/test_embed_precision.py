"""The CPU embedding path (refinery/embedding.py): precision chosen by CPU flags, length
buckets that put every vector back in its text's place, vectors that do not depend on the
texts batched with them, the fast path close to float32; and the embed step's resources
taken from what the cluster offers (pipelines/documents/embed.py). No Ray."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from pipelines.documents.config import EmbedConfig
from pipelines.documents.embed import embed_resources
from refinery.config import EmbeddingConfig
from refinery.embedding import (
    BF16_FLAGS,
    BUCKET_TOKENS,
    buckets,
    cpu_flags,
    encode_texts,
    load_embedder,
    model_precision,
    resolve_precision,
)

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
ZEN4 = AVX2 | {"avx512f", "avx512bw", "avx512_bf16"}
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "amx_tile", "amx_bf16"}
TEXTS = [
    "read parquet files with pyarrow",
    "a cat sat on the mat",
    "Ray Serve batches requests across replicas and callers " * 12,
    "The quick brown fox jumps over the lazy dog. " * 40,  # past the model's window
    "x",
    "Vectors come back in the order the texts went in, whatever their lengths.",
]


@pytest.mark.parametrize(
    ("precision", "device", "flags", "expected"),
    [
        ("auto", "cpu", AVX2, "fp32"),
        ("auto", "cpu", ZEN4, "bf16"),
        ("auto", "cpu", SAPPHIRE_RAPIDS, "bf16"),
        ("auto", "cpu", set(), "fp32"),
        ("auto", "cuda", ZEN4, "fp32"),
        ("bf16", "cuda:0", ZEN4, "fp32"),
        ("fp32", "cpu", ZEN4, "fp32"),
        ("bf16", "cpu", AVX2, "bf16"),
    ],
)
def test_precision_follows_the_cpu_flags(
    precision: str, device: str, flags: set[str], expected: str
) -> None:
    assert resolve_precision(precision, device, flags) == expected


def test_buckets_cover_every_row_once() -> None:
    lengths = [3, 256, 17, 16, 1, 300, 40, 0, 255, 33] * 7
    passes = buckets(lengths, limit=256, batch_tokens=8 * 256)
    rows = sorted(r for _, members in passes for r in members)
    assert rows == list(range(len(lengths)))
    for padded, members in passes:
        assert padded <= 256 and (padded % BUCKET_TOKENS == 0 or padded == 256)
        assert all(min(lengths[r], 256) <= padded < max(lengths[r], 1) + BUCKET_TOKENS
                   for r in members)  # fmt: skip
        assert len(members) <= max(8 * 256 // padded, 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small encodes on a shared machine: more threads only wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fp32():
    return load_embedder(EmbeddingConfig(precision="fp32"))


def test_vectors_keep_their_texts_order_and_ignore_their_batch(fp32) -> None:
    cfg = EmbeddingConfig(precision="fp32", batch_size=2)
    together = encode_texts(fp32, TEXTS, cfg)
    alone = np.stack([encode_texts(fp32, [t], cfg)[0] for t in TEXTS])
    reversed_ = encode_texts(fp32, TEXTS[::-1], cfg)[::-1]
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, reversed_)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert encode_texts(fp32, [], cfg).shape == (0, together.shape[1])


def test_fp32_equals_plain_sentence_transformers(fp32) -> None:
    ours = encode_texts(fp32, TEXTS, EmbeddingConfig(precision="fp32"))
    plain = fp32.encode(TEXTS, batch_size=32, normalize_embeddings=True)
    np.testing.assert_allclose(ours, plain, atol=1e-5)


def test_auto_on_an_avx2_cpu_loads_fp32() -> None:
    assert model_precision(load_embedder(EmbeddingConfig(), flags=AVX2)) == "fp32"


@pytest.mark.skipif(not cpu_flags() & BF16_FLAGS, reason="no native bfloat16 on this CPU")
def test_bf16_is_close_to_fp32_and_batch_independent(fp32) -> None:
    cfg = EmbeddingConfig(precision="auto")
    model = load_embedder(cfg)
    assert model_precision(model) == "bf16"
    fast = encode_texts(model, TEXTS, cfg)
    reference = encode_texts(fp32, TEXTS, EmbeddingConfig(precision="fp32"))
    assert (fast * reference).sum(axis=1).min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    alone = np.stack([encode_texts(model, [t], cfg)[0] for t in TEXTS])
    np.testing.assert_array_equal(fast, alone)


@pytest.mark.parametrize(
    ("actors", "cpus", "nodes", "free", "device", "expected"),
    [
        (None, None, [2.0], 2.0, "cpu", (1, 2.0)),  # one actor with both cores as threads
        (None, None, [16.0], 16.0, "cpu", (4, 4.0)),
        (None, None, [1.0, 1.0, 1.0], 3.0, "cpu", (3, 1.0)),  # nodes of one CPU
        (None, None, [8.0, 2.0], 10.0, "cpu", (2, 4.0)),  # an actor fits one node only
        (None, None, [2.0], 1.0, "cpu", (1, 1.0)),  # another job holds a core
        (None, None, [2.0], 0.0, "cpu", (1, 1.0)),
        (None, 1.0, [2.0], 2.0, "cpu", (2, 1.0)),
        (3, None, [2.0], 2.0, "cpu", (3, 2.0)),
        (1, 1.0, [16.0], 16.0, "cpu", (1, 1.0)),
        (None, None, [16.0], 16.0, "cuda", (1, 1.0)),  # the GPU path keeps its defaults
    ],
)
def test_embed_resources_fill_the_cluster(
    actors: int | None,
    cpus: float | None,
    nodes: list[float],
    free: float,
    device: str,
    expected: tuple[int, float],
) -> None:
    cfg = EmbedConfig(actors=actors, cpus_per_actor=cpus)
    assert embed_resources(cfg, nodes, free, device) == expected
