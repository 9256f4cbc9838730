"""A schedule as teams that schedule outside Ray would write it: a crontab entry and a KubeRay
RayCronJob manifest. Neither keeps all of the scheduler's guarantees; each says which it keeps."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from jobs.schedule.cron import expand
from jobs.schedule.model import ScheduleSpec


def _job_args(spec: ScheduleSpec) -> list[str]:
    args = []
    if spec.config:
        args += ["--config", spec.config]
    if spec.profile:
        args += ["--profile", spec.profile]
    for item in spec.set:
        args += ["--set", item]
    return args


def crontab(spec: ScheduleSpec) -> str:
    """The entry for cronie (CRON_TZ, flock from util-linux): `refinery submit` under the
    scheduler's submission id, so a repeated fire finds the job instead of starting another."""
    # The id is the fire's minute in UTC, as the scheduler derives it; cron starts within it.
    stamp = "$(date -u +%Y%m%dT%H%M00Z)"
    command = shlex.join(["refinery", "submit", spec.job, *_job_args(spec)])
    command += f" --submission-id sched-{spec.name}-{stamp} --wait"
    # A run that is still going holds the lock, and the next fire, not getting it, is skipped.
    lock = shlex.quote(f"/tmp/refinery-schedule-{spec.name}.lock")
    line = f"{expand(spec.cron)} flock -n {lock} {command}"
    return "\n".join(
        [
            f"# refinery schedule {spec.name}: skips a fire while the previous run goes on; "
            "cron neither catches up on fires missed while it was down nor keeps a history",
            f"CRON_TZ={spec.tz}",
            line.replace("%", r"\%"),  # crontab reads an unescaped % as a line break
        ]
    )


def raycronjob(spec: ScheduleSpec, cluster: str = "refinery", paused: bool = False) -> dict:
    """A RayCronJob (ray.io/v1, KubeRay's alpha CRD) whose RayJobs run `refinery run` on the
    existing RayCluster labelled ray.io/cluster=CLUSTER, where the project is installed."""
    labels = {"app.kubernetes.io/part-of": "refinery", "refinery.io/schedule": spec.name}
    entrypoint = shlex.join(["python", "-m", "jobs.cli", "run", spec.job, *_job_args(spec)])
    job_spec: dict[str, Any] = {
        "entrypoint": entrypoint,
        "clusterSelector": {"ray.io/cluster": cluster},
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCronJob",
        "metadata": {"name": f"refinery-{spec.name}", "labels": labels},
        "spec": {
            "schedule": expand(spec.cron),
            "timeZone": spec.tz,
            "suspend": paused,
            "jobTemplate": {"metadata": {"labels": dict(labels)}, "spec": job_spec},
        },
    }


def raycronjob_yaml(spec: ScheduleSpec, cluster: str = "refinery", paused: bool = False) -> str:
    header = (
        "# KubeRay RayCronJob (alpha: KubeRay 1.6 or later with the RayCronJob feature gate on;\n"
        "# spec.timeZone needs 1.7). The job's config path is read on the cluster's head.\n"
        "# Unlike refinery's scheduler, nothing here skips a fire while a run goes on, catches\n"
        "# up on missed fires or keeps their history.\n"
    )
    manifest = raycronjob(spec, cluster, paused)
    return header + yaml.safe_dump(manifest, sort_keys=False, width=1_000_000)
