"""The snapshot manifest (refinery/manifest.py): written by the document pipeline, read by
the Serve loader; a manifest that cannot describe a servable snapshot says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refinery.manifest import Manifest, SnapshotError

MANIFEST = Manifest(
    model="all-MiniLM-L6-v2",
    dimension=384,
    metric="ip",
    count=3,
    index="/snap/index/index.bin",
    documents="/snap/documents",
    corpus_fingerprint="abc",
    created_at="2026-12-06T00:00:00+00:00",
)


def test_written_and_read_back(tmp_path: Path) -> None:
    path = MANIFEST.write(str(tmp_path))
    assert path == f"{tmp_path}/manifest.json"
    assert Manifest.read(str(tmp_path)) == MANIFEST


def test_the_update_log_position_round_trips_and_older_manifests_read_none(
    tmp_path: Path,
) -> None:
    with_position = Manifest(**{**MANIFEST.__dict__, "update_log_position": 42})
    with_position.write(str(tmp_path))
    assert Manifest.read(str(tmp_path)).update_log_position == 42
    older = json.loads((tmp_path / "manifest.json").read_text())
    del older["update_log_position"]
    (tmp_path / "manifest.json").write_text(json.dumps(older))
    assert Manifest.read(str(tmp_path)) == MANIFEST


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": None}, "manifest lacks index"),
        ({"dimension": None, "metric": ""}, "manifest lacks dimension, metric"),
        ({"format": 2}, "manifest format 2, expected 1"),
        ({"dimension": "wide"}, "bad manifest value"),
    ],
)
def test_an_unservable_manifest_says_why(tmp_path: Path, change: dict, message: str) -> None:
    data = {**json.loads(Path(MANIFEST.write(str(tmp_path))).read_text()), **change}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match=f"manifest.json: {message}"):
        Manifest.read(str(tmp_path))


def test_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot read manifest"):
        Manifest.read(str(tmp_path))
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SnapshotError, match="a manifest is a JSON object"):
        Manifest.read(str(tmp_path))


def test_the_index_file_must_match_the_manifest() -> None:
    MANIFEST.check_index(384, "ip")
    with pytest.raises(SnapshotError, match="index has dimension 768 and metric 'ip'"):
        MANIFEST.check_index(768, "ip")
    with pytest.raises(SnapshotError, match="metric 'l2', the manifest says 384 and 'ip'"):
        MANIFEST.check_index(384, "l2")


def test_the_embedder_must_be_the_one_the_vectors_came_from() -> None:
    MANIFEST.check_embedder("all-MiniLM-L6-v2", 384)
    with pytest.raises(SnapshotError, match="model 'all-MiniLM-L6-v2' .384 dims.*'e5-small'"):
        MANIFEST.check_embedder("e5-small", 384)
    with pytest.raises(SnapshotError, match="refusing this snapshot"):
        MANIFEST.check_embedder("all-MiniLM-L6-v2", 768)
