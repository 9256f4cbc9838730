"""save/load: round trips (mmap included), atomic writes, and rejection of damaged files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import vectorindex as vi


def make(kind: str, quantize: str | None = None) -> tuple[vi.Index, np.ndarray]:
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((600, 20)).astype(np.float32)
    if kind == "flat":
        index = vi.IndexFlat(20, "ip", quantize=quantize)
    else:
        index = vi.IndexHNSW(20, "cosine", M=8, ef_construction=50, quantize=quantize)
    index.add_with_ids(xb, np.arange(600) + 1000)
    index.remove_ids(np.arange(1000, 1100))
    return index, xb


CASES = [("flat", None), ("flat", "int8"), ("hnsw", None), ("hnsw", "int8")]


@pytest.mark.parametrize(("kind", "quantize"), CASES)
@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip(tmp_path, kind, quantize, mmap):
    index, xb = make(kind, quantize)
    path = tmp_path / "index.vi"
    index.save(path)
    assert os.listdir(tmp_path) == ["index.vi"]
    loaded = vi.load(path, mmap=mmap)
    assert type(loaded) is type(index)
    assert (loaded.d, loaded.ntotal, loaded.metric, loaded.quantize) == (
        index.d,
        index.ntotal,
        index.metric,
        index.quantize,
    )
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    for a, b in zip(index.search(xb[:50], 7), loaded.search(xb[:50], 7), strict=True):
        np.testing.assert_array_equal(a, b)
    # A loaded (even mapped) index takes adds and deletes, and the file stays as saved.
    loaded.add(xb[:5])
    loaded.remove_ids([1200])
    assert loaded.ntotal == index.ntotal + 4
    assert vi.load(path).ntotal == index.ntotal


def test_save_replaces_atomically(tmp_path):
    index, xb = make("flat")
    path = tmp_path / "index.vi"
    index.save(path)
    index.add(xb[:10])
    index.save(str(path))
    assert vi.load(path).ntotal == index.ntotal
    assert os.listdir(tmp_path) == ["index.vi"]


@pytest.mark.parametrize(("kind", "quantize"), CASES)
def test_truncated_files_are_rejected(tmp_path, kind, quantize):
    index, _ = make(kind, quantize)
    path = tmp_path / "index.vi"
    index.save(path)
    blob = path.read_bytes()
    for size in [0, 7, 64, 127, 128, 129, len(blob) // 2, len(blob) - 1]:
        path.write_bytes(blob[:size])
        with pytest.raises(ValueError, match="corrupt index file"):
            vi.load(path)


def test_corrupt_bytes_are_rejected(tmp_path):
    index, _ = make("hnsw")
    path = tmp_path / "index.vi"
    index.save(path)
    blob = path.read_bytes()
    rng = np.random.default_rng(1)
    for pos in [0, 9, 40, *rng.integers(128, len(blob), 20).tolist()]:
        damaged = bytearray(blob)
        damaged[pos] ^= 0x5A
        path.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match="corrupt index file"):
            vi.load(path, mmap=True)
    path.write_bytes(blob + b"\0" * 64)
    with pytest.raises(ValueError, match="corrupt index file"):
        vi.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        vi.load(tmp_path / "nope.vi")
    index, _ = make("flat")
    with pytest.raises(OSError):
        index.save(tmp_path / "no-such-dir" / "index.vi")
