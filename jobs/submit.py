"""Batch jobs on a running Ray cluster through its Jobs API (`refinery submit`, `refinery jobs`).

A submission ships the project's packages and the job's config, validated and resolved here
(profile, overrides), as the job's working_dir; the entrypoint is `refinery run` on that config.
Ray clusters run token authentication (on by default for new clusters): the token is found the
way Ray finds it and sent with every request. A submission id makes a retry idempotent: Ray
refuses a reused id, so an existing job of that id is reported instead.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from jobs.batch import BatchJob
from refinery.config import JobConfig
from refinery.ray_runtime import auth_token

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

REPO = Path(__file__).resolve().parent.parent
# What a job needs of the repo: the packages and the YAML they read (compiled vectorindex comes
# from each node's install of the project).
SHIPPED = ("refinery", "pipelines", "serve", "jobs", "bench", "vectorindex", "configs")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "src")
SUBMITTED_CONFIG = "submitted-config.yaml"
AGENT_WAIT_S = 120


def connect(address: str | None) -> JobSubmissionClient:
    """A Jobs API client for `address` (http://HEAD:8265; None: Ray's own default lookup)."""
    from ray.job_submission import JobSubmissionClient

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return JobSubmissionClient(address, headers=headers)


@contextmanager
def shipped_working_dir(cfg: JobConfig) -> Iterator[Path]:
    """A folder holding the project's packages and the resolved config, removed afterwards
    (Ray uploads it at submission)."""
    with tempfile.TemporaryDirectory(prefix="refinery-submit-") as tmp:
        root = Path(tmp)
        for name in SHIPPED:
            shutil.copytree(REPO / name, root / name, ignore=_IGNORED)
        text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        (root / SUBMITTED_CONFIG).write_text(text)
        yield root


def entrypoint(job: BatchJob) -> str:
    # The shipped config holds the whole runtime section, so no profile changes it there.
    return f"python -m jobs.cli run {job.name} --config {SUBMITTED_CONFIG}"


def submit(
    client: JobSubmissionClient, job: BatchJob, cfg: JobConfig, submission_id: str | None
) -> tuple[str, bool]:
    """(job id, whether this call submitted it): a known submission id is not submitted again."""
    if submission_id and (known := _existing(client, submission_id)):
        return known, False
    with shipped_working_dir(cfg) as working_dir:
        try:
            job_id = _submit_when_agent_ready(
                client,
                entrypoint=entrypoint(job),
                runtime_env={"working_dir": str(working_dir)},
                submission_id=submission_id,
                metadata={"refinery.job": job.name},
            )
        except RuntimeError:
            # Submitted by a concurrent retry between the check and here.
            if submission_id and (known := _existing(client, submission_id)):
                return known, False
            raise
    return job_id, True


def _submit_when_agent_ready(client: JobSubmissionClient, **job: Any) -> str:
    """A head that has just started answers the Jobs API before its job agent is up, and
    refuses submissions until then ("No available agent"): wait for it, within a bound."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def _existing(client: JobSubmissionClient, submission_id: str) -> str | None:
    try:
        return client.get_job_info(submission_id).submission_id
    except RuntimeError:  # the Jobs API answers 404 for an unknown id
        return None


def follow_logs(client: JobSubmissionClient, job_id: str, write: Callable[[str], Any]) -> str:
    """Stream the job's logs until it ends; returns its final status."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            write(lines)

    asyncio.run(tail())
    return str(client.get_job_status(job_id).value)


def job_summary(info: Any) -> dict[str, Any]:
    return {
        "submission_id": info.submission_id,
        "status": str(info.status.value),
        "job": (info.metadata or {}).get("refinery.job"),
        "entrypoint": info.entrypoint,
        "message": info.message,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }
