"""What a schedule is (`ScheduleSpec`, also an item of configs/schedules.yaml), what happened to
each of its fires (`Run`), and everything the scheduler persists about it (`ScheduleState`)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BeforeValidator, Field, field_validator

from jobs.schedule.cron import check_cron, zone
from refinery.config import StrictModel, parse_override, read_yaml, validate

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "configs" / "schedules.yaml"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Seconds from a number or from '90s', '5m', '1h', '2d'."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if not match:
            raise ValueError(f"{value!r}: a duration like 90s, 5m, 1h or 2d")
        return float(match.group(1)) * _SECONDS[match.group(2)]
    return value


def format_duration(seconds: float | timedelta) -> str:
    total = int(seconds.total_seconds() if isinstance(seconds, timedelta) else seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    if total or not parts:
        parts.append(f"{total}s")
    return "".join(parts)


# A tick can wait behind other schedules' submissions (each uploads the project), so a window
# narrower than that would turn an on-time fire into a missed one.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=60)]


def known_jobs() -> list[str]:
    from jobs.batch import BATCH_JOBS

    return sorted(BATCH_JOBS)


class ScheduleSpec(StrictModel):
    """One schedule as declared: `refinery schedule add` flags or an item of schedules.yaml."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="lowercase letters, digits and '-': it names Ray jobs and Kubernetes objects",
    )
    job: str = Field(description="the batch job to submit (refinery submit JOB)")
    cron: str = Field(description="five cron fields (minute hour day month weekday) or @daily...")
    tz: str = Field("UTC", description="IANA time zone the cron fields are read in")
    config: str | None = Field(None, description="job config YAML; None: the job's default")
    profile: str | None = Field(
        None, description="runtime profile of the job's config; None: the command's --profile"
    )
    set: list[str] = Field(default_factory=list, description="KEY.PATH=VALUE overrides")
    grace: Duration = Field(
        3600.0,
        description="how late a fire may still run (seconds or 90s/5m/1h/2d); later ones are "
        "recorded missed",
    )

    @field_validator("job")
    @classmethod
    def _known_job(cls, job: str) -> str:
        jobs = known_jobs()
        if job not in jobs:
            raise ValueError(f"unknown job {job!r} (known: {', '.join(jobs)})")
        return job

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        return check_cron(cron)

    @field_validator("tz")
    @classmethod
    def _tz(cls, tz: str) -> str:
        zone(tz)
        return tz

    @field_validator("set")
    @classmethod
    def _overrides(cls, items: list[str]) -> list[str]:
        for item in items:
            parse_override(item)
        return items


class ScheduleFile(StrictModel):
    """configs/schedules.yaml: the schedules `refinery schedule apply` adds or updates."""

    schedules: list[ScheduleSpec] = Field(default_factory=list)

    @field_validator("schedules")
    @classmethod
    def _unique(cls, schedules: list[ScheduleSpec]) -> list[ScheduleSpec]:
        names = [spec.name for spec in schedules]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"names used more than once: {', '.join(twice)}")
        return schedules


def load_schedule_file(path: str | Path = DEFAULT_FILE) -> ScheduleFile:
    """The file's schedules; one ConfigError naming the file and key path for any mistake."""
    return validate(ScheduleFile, read_yaml(path), str(path))


RunStatus = Literal[
    "SUBMITTING",  # decided and persisted, not yet accepted by the Jobs API
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "STOPPED",
    "SKIPPED",  # the previous run was still going
    "MISSED",  # later than the grace window
    "COALESCED",  # one of several fires due at once, all served by the latest one's run
]
ACTIVE = ("SUBMITTING", "PENDING", "RUNNING")
RAY_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class Run(StrictModel):
    fire_time: AwareDatetime
    trigger: Literal["cron", "manual"] = "cron"
    status: RunStatus
    submission_id: str | None = None
    job_id: str | None = None
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class ScheduleState(StrictModel):
    """All the scheduler keeps about one schedule; with it, a restarted scheduler knows which
    fires it has decided (every one up to `cursor`) and which runs may still be going."""

    spec: ScheduleSpec
    job_config: dict[str, Any] = Field(
        description="the job's config resolved when the schedule was added (profile, file, --set)"
    )
    created: AwareDatetime
    updated: AwareDatetime
    cursor: AwareDatetime = Field(description="every cron fire up to this instant is decided")
    paused: bool = False
    runs: list[Run] = Field(default_factory=list, description="oldest first, bounded")

    def active_run(self) -> Run | None:
        return next((run for run in reversed(self.runs) if run.active), None)

    def last_fire(self) -> datetime | None:
        return self.runs[-1].fire_time if self.runs else None


def resolve(spec: ScheduleSpec, profile: str | None = None) -> tuple[ScheduleSpec, dict[str, Any]]:
    """The spec with its profile settled and the job config it submits, resolved and checked
    now (profile, file, --set), as `refinery submit` does: a mistake is found when the schedule
    is added, not at its first fire, and the scheduler needs none of this machine's files."""
    from jobs.batch import BATCH_JOBS, load_batch_config
    from refinery.config import ConfigError, default_profile

    spec = spec.model_copy(update={"profile": spec.profile or profile or default_profile()})
    cfg = load_batch_config(BATCH_JOBS[spec.job], spec.config, spec.profile, spec.set)
    missing = [key for key in ("input", "output") if not getattr(cfg, key)]
    if missing:
        raise ConfigError(
            f"schedule {spec.name}: {', '.join(missing)}: required (in the config or with --set)"
        )
    return spec, cfg.model_dump(mode="json")
