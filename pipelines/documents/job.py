"""`refinery run docs`: the document pipeline under the batch-job harness (jobs/batch.py)."""

from __future__ import annotations

from pipelines.documents.config import DocsJobConfig
from pipelines.documents.pipeline import build_steps, run_pipeline
from pipelines.documents.steps import RunContext
from pipelines.documents.write import write_outputs
from refinery.runstats import RunStats
from refinery.tracking import Tracker


def run(cfg: DocsJobConfig, stats: RunStats, tracker: Tracker) -> None:
    """Run the configured steps on cfg.input, write under cfg.output, log to MLflow."""
    assert cfg.input and cfg.output  # the harness checks both before calling
    ctx = RunContext(runtime=cfg.runtime, stats=stats, output=cfg.output)
    ds = run_pipeline(cfg.input, cfg.read, build_steps(cfg.steps), ctx)
    outputs = write_outputs(ds, cfg.write, ctx)
    stats.extra["params"] = ctx.params
    stats.extra["outputs"] = outputs
    tracker.log_params({"result": ctx.params, "outputs": outputs})
