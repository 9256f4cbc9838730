"""An embedding actor killed mid-job: the pool restarts it, and the job writes what a run
where nothing is killed writes."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.cloudpickle
from docs_corpus import prose

from pipelines.documents.chunk import Chunk
from pipelines.documents.config import ChunkConfig, EmbedConfig, ReadConfig, WriteConfig
from pipelines.documents.embed import Embed, Embedder
from pipelines.documents.pipeline import run_pipeline
from pipelines.documents.steps import RunContext
from pipelines.documents.write import write_outputs
from refinery.config import RuntimeConfig
from refinery.runstats import RunStats

pytestmark = pytest.mark.usefixtures("ray_session")


def killed_on_second_batch(marker: Path) -> type[Embedder]:
    """An Embedder whose process is SIGKILLed at its second batch, once per test (the
    marker file remembers): the first batch's vectors are already back, the rest in flight."""

    class KilledOnSecondBatch(Embedder):
        calls = 0

        def __call__(self, table: pa.Table) -> pa.Table:
            self.calls += 1
            if self.calls == 2 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(table)

    return KilledOnSecondBatch


def run_job(corpus: Path, out: Path, embed: Embed) -> tuple[pa.Table, dict]:
    """Read, chunk, embed and write (the job's own functions); the documents table, sorted,
    and the manifest."""
    stats = RunStats("docs")
    ctx = RunContext(runtime=RuntimeConfig(), stats=stats, output=str(out))
    steps = [Chunk(ChunkConfig(size=32, overlap=4)), embed]
    ds = run_pipeline(str(corpus), ReadConfig(files_per_task=1), steps, ctx)
    write_outputs(ds, WriteConfig(), ctx)
    table = pq.read_table(out / "documents").sort_by("id")
    manifest = json.loads((out / "index" / "manifest.json").read_text())
    return table, {**manifest, "embed": stats.to_dict()["steps"]["embed"]}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(4):
        records = [{"id": f"d{i}-{j}", "text": prose(10 * i + j)} for j in range(2)]
        (root / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_embed_actor_killed_mid_job_gives_the_same_output(corpus: Path, tmp_path: Path) -> None:
    # Workers import this module by value: it is not on their import path.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = EmbedConfig(batch_size=2)  # several calls per actor, so one dies mid-stage
    baseline, base_manifest = run_job(corpus, tmp_path / "baseline", Embed(cfg))
    marker = tmp_path / "killed.pid"
    killing = Embed(cfg)
    killing.embedder = killed_on_second_batch(marker)
    killed, manifest = run_job(corpus, tmp_path / "killed", killing)

    assert int(marker.read_text()) != os.getpid()  # an actor died, not the driver
    assert killed["id"].to_pylist() == baseline["id"].to_pylist()
    assert killed["text"].to_pylist() == baseline["text"].to_pylist()
    np.testing.assert_array_equal(
        np.asarray(killed["vector"].to_pylist()), np.asarray(baseline["vector"].to_pylist())
    )
    assert manifest["corpus_fingerprint"] == base_manifest["corpus_fingerprint"]
    assert manifest["count"] == base_manifest["count"] == baseline.num_rows > 8
    assert manifest["embed"]["rows_out"] == base_manifest["embed"]["rows_out"]
