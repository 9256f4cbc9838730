"""Both batch jobs through the CLI on a simulated three-node cluster (`ray.cluster_utils.Cluster`:
three raylets on this machine) give the same outputs as on one local node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.documents.demo import build_demo_corpus
from pipelines.logs.generate import write_logs

pytestmark = pytest.mark.slow

DOCS_FILES = 6


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[str]:
    """A head and two workers of one CPU each; yields the address a driver joins."""
    from ray.cluster_utils import Cluster

    # Small object stores: each raylet would otherwise take a share of the machine's memory.
    node = {"num_cpus": 1, "object_store_memory": 256 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real text (installed packages' READMEs) spread over several files, and generated logs."""
    root = tmp_path_factory.mktemp("inputs")
    lines = Path(build_demo_corpus(str(root / "all"), max_docs=40)).read_text().splitlines()
    docs = root / "docs"
    docs.mkdir()
    for index in range(DOCS_FILES):
        part = lines[index::DOCS_FILES] + ['{"id": "broken", "text": ']  # one bad line per file
        (docs / f"part-{index}.jsonl").write_text("\n".join(part) + "\n")
    write_logs(root / "logs", rows=20_000, files=4, seed=11, malformed_rate=0.005)
    return {"docs": docs, "logs": root / "logs"}


def run_cli(job: str, source: Path, output: Path, state: Path, address: str | None) -> dict:
    """`refinery run JOB` in its own process: on the cluster at `address`, or on a new local
    Ray of its own (`local`: not the running cluster that ray.init would otherwise find)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [
        sys.executable, "-m", "jobs.cli", "run", job, "--profile", "local",
        "--input", str(source), "--output", str(output),
        "--set", f"runtime.storage.root={state}",
        "--set", f"runtime.ray.address={'local' if address is None else address}",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((output / "stats.json").read_text())


def step_counts(stats: dict) -> dict:
    return {
        name: (step["rows_in"], step["rows_out"], step["dropped"], step["quarantined"])
        for name, step in stats["steps"].items()
    }


def documents(output: Path) -> pd.DataFrame:
    table = pq.read_table(output / "documents").to_pandas()
    return table.sort_values("id").reset_index(drop=True)


@pytest.mark.parametrize("job", ["docs", "logs"])
def test_three_nodes_give_the_outputs_of_one(
    job: str, three_nodes: str, corpora: dict[str, Path], tmp_path: Path
) -> None:
    one = tmp_path / "one-node"
    many = tmp_path / "three-nodes"
    single = run_cli(job, corpora[job], one, tmp_path / "state-1", address=None)
    multi = run_cli(job, corpora[job], many, tmp_path / "state-3", address=three_nodes)
    assert multi["cluster"]["nodes"] == 3 and single["cluster"]["nodes"] == 1

    assert step_counts(multi) == step_counts(single)
    quarantine = [(one / "quarantine.jsonl").read_text(), (many / "quarantine.jsonl").read_text()]
    assert sorted(quarantine[0].splitlines()) == sorted(quarantine[1].splitlines())
    if job == "logs":
        expected = pd.read_parquet(one / "aggregate.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(many / "aggregate.parquet"), expected)
        return
    a, b = documents(one), documents(many)
    assert len(a) > DOCS_FILES
    pd.testing.assert_frame_equal(b.drop(columns="vector"), a.drop(columns="vector"))
    np.testing.assert_allclose(np.stack(b["vector"]), np.stack(a["vector"]), atol=1e-5)
