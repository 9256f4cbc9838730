"""Batch jobs (`refinery run NAME`): config model, runner, and the harness every run goes through.

A runner is a plain function in pipelines/ (in jobs/ where it hands over to serve/) with the
signature `run(cfg, stats: RunStats, tracker: Tracker) -> None`; the harness joins Ray, opens the
MLflow run, and writes DIR/stats.json whether the job succeeds or fails, and whether or not MLflow
answered (its `tracking` entry says).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from refinery.config import CONFIG_DIR, ConfigError, JobConfig, load_job_config
from refinery.ray_runtime import cluster_summary, init_ray
from refinery.runstats import RunStats
from refinery.tracking import Tracker, tracked_run


@dataclass(frozen=True)
class BatchJob:
    name: str
    description: str
    config_model: str  # "module:Class", imported on use so --help stays fast
    runner: str  # "module:function"
    default_config: str

    def load_config_model(self) -> type[JobConfig]:
        return _import(self.config_model)

    def load_runner(self) -> Callable[[Any, RunStats, Tracker], None]:
        return _import(self.runner)


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


BATCH_JOBS: dict[str, BatchJob] = {
    job.name: job
    for job in (
        BatchJob(
            "docs",
            "documents: read, clean, dedup, chunk, embed, write Parquet + index",
            "pipelines.documents.config:DocsJobConfig",
            "pipelines.documents.job:run",
            str(CONFIG_DIR / "docs.yaml"),
        ),
        BatchJob(
            "logs",
            "LLM logs: parse (quarantine bad lines), aggregate, write table + chart",
            "pipelines.logs.config:LogsJobConfig",
            "pipelines.logs.job:run",
            str(CONFIG_DIR / "logs.yaml"),
        ),
        BatchJob(
            "reindex",
            "next index version: changed chunks embedded, update log folded in, validated, "
            "registered as challenger",
            "jobs.reindex:ReindexJobConfig",
            "jobs.reindex:run",
            str(CONFIG_DIR / "reindex.yaml"),
        ),
    )
}


def load_batch_config(
    job: BatchJob,
    path: str | None,
    profile: str | None = None,
    overrides: list[str] | None = None,
) -> JobConfig:
    return load_job_config(
        job.load_config_model(), path or job.default_config, profile=profile, overrides=overrides
    )


def run_batch_job(job: BatchJob, cfg: JobConfig) -> RunStats:
    """Run one job end to end; raises what the job raised after recording it."""
    if not cfg.input:
        raise ConfigError(f"{job.name}: input: required (set it in the config or pass --input)")
    if not cfg.output:
        raise ConfigError(f"{job.name}: output: required (set it in the config or pass --output)")
    runner = job.load_runner()
    init_ray(cfg.runtime.ray)
    runtime = cfg.runtime
    with tracked_run(
        job.name, runtime.tracking, runtime.storage, cfg.model_dump(mode="json")
    ) as tracker:
        stats = RunStats(job.name, run_id=tracker.run_id)
        stats.extra["cluster"] = cluster_summary()
        try:
            runner(cfg, stats, tracker)
            stats.status = "FINISHED"
        except BaseException:
            stats.status = "FAILED"
            raise
        finally:
            tracker.log_metrics(stats.metrics())
            tracker.log_dict(stats.to_dict(), "stats.json")
            stats.extra["tracking"] = tracker.status()
            stats.write(cfg.output)
    return stats
