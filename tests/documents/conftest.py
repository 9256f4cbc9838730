"""Fixtures for the document pipeline tests: the planted corpus and a dedup-only runner."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from docs_corpus import planted_corpus, write_jsonl

from pipelines.documents.config import ReadConfig
from pipelines.documents.pipeline import run_pipeline
from pipelines.documents.steps import RunContext, Step
from refinery.config import RuntimeConfig
from refinery.runstats import RunStats


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    docs = planted_corpus()
    return docs, write_jsonl(docs, tmp_path_factory.mktemp("planted"))


RunDedup = Callable[..., dict]


@pytest.fixture
def run_steps(tmp_path: Path) -> RunDedup:
    """Run steps on a corpus folder; returns kept ids, stats, and the output folder."""

    def run(
        source: Path, steps: Sequence[Step], files_per_task: int = 1, name: str = "out"
    ) -> dict:
        out = tmp_path / name
        stats = RunStats("docs")
        ctx = RunContext(runtime=RuntimeConfig(), stats=stats, output=str(out))
        ds = run_pipeline(str(source), ReadConfig(files_per_task=files_per_task), steps, ctx)
        rows = ds.select_columns(["id"]).take_all()
        clusters = [json.loads(line) for line in (out / "near_duplicates.jsonl").open()]
        return {
            "ids": sorted(r["id"] for r in rows),
            "stats": stats.to_dict()["steps"],
            "params": ctx.params,
            "clusters": clusters,
            "out": out,
        }

    return run
