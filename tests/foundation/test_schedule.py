"""The scheduler's logic without Ray: fire times across daylight saving, overlap skips, restarts,
misfires within and beyond the grace window, the YAML file and `show`. The clock is an argument
and the Jobs API a fake, so days of fires take milliseconds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from jobs.cli import main
from jobs.schedule.cron import CronSchedule, submission_id
from jobs.schedule.export import crontab, raycronjob
from jobs.schedule.model import DEFAULT_FILE, ScheduleSpec, load_schedule_file
from jobs.schedule.scheduler import JobInfo, Scheduler
from jobs.schedule.store import ScheduleStore
from refinery.config import ConfigError

BERLIN = ZoneInfo("Europe/Berlin")
JOB_CONFIG = {"input": "s3://in/", "output": "s3://out/"}


class Died(BaseException):
    """The scheduler's process dying mid-tick (not an error it would catch)."""


class FakeJobs:
    """The Jobs API as the scheduler sees it: a submission id it knows is not started again."""

    def __init__(self, finish_at_once: bool = False) -> None:
        self.status_of: dict[str, str] = {}
        self.calls: list[str] = []
        self.finish_at_once = finish_at_once
        self.fail: Exception | None = None
        self.die_before = self.die_after = False
        self.polls = 0

    def submit(self, job: str, config: dict, submission_id: str) -> str:
        self.calls.append(submission_id)
        if self.die_before:
            raise Died
        if self.fail is not None:
            raise self.fail
        self.status_of.setdefault(submission_id, "SUCCEEDED" if self.finish_at_once else "RUNNING")
        if self.die_after:
            raise Died
        return submission_id

    def status(self, job_id: str) -> JobInfo:
        self.polls += 1
        if job_id not in self.status_of:
            raise LookupError(job_id)
        return JobInfo(self.status_of[job_id])

    @property
    def started(self) -> list[str]:
        return list(self.status_of)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def minutes(start: datetime, end: datetime, step_s: int = 60) -> Iterator[datetime]:
    now = start
    while now <= end:
        yield now
        now += timedelta(seconds=step_s)


def make(
    tmp_path: Path, jobs: FakeJobs, cron: str, now: datetime, tz: str = "UTC", grace: str = "1h"
) -> Scheduler:
    scheduler = Scheduler(ScheduleStore(str(tmp_path / "state")), jobs)
    spec = ScheduleSpec(name="nightly", job="docs", cron=cron, tz=tz, grace=grace)
    scheduler.add(spec, JOB_CONFIG, now)
    return scheduler


def statuses(scheduler: Scheduler) -> list[tuple[str, str]]:
    return [(run.fire_time.strftime("%H:%M"), run.status) for run in scheduler.get("nightly").runs]


def test_a_one_minute_cron_fires_twice_in_two_minutes(tmp_path: Path) -> None:
    jobs = FakeJobs(finish_at_once=True)
    start = at("2026-01-05T10:00:30+00:00")
    scheduler = make(tmp_path, jobs, "* * * * *", start)
    for now in minutes(start, start + timedelta(minutes=2), step_s=5):
        scheduler.tick(now)
    assert jobs.started == ["sched-nightly-20260105T100100Z", "sched-nightly-20260105T100200Z"]
    runs = scheduler.get("nightly").runs
    assert [run.status for run in runs] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(run.start and run.end and run.start <= run.end for run in runs)
    # Each fire ran within one tick of its time.
    assert all(run.start - run.fire_time <= timedelta(seconds=5) for run in runs)


def test_an_overlapping_fire_is_skipped_and_recorded(tmp_path: Path) -> None:
    jobs = FakeJobs()
    start = at("2026-01-05T10:00:30+00:00")
    scheduler = make(tmp_path, jobs, "* * * * *", start)
    scheduler.tick(at("2026-01-05T10:01:01+00:00"))
    scheduler.tick(at("2026-01-05T10:02:01+00:00"))  # the 10:01 run still RUNNING
    manual = scheduler.run_now("nightly", at("2026-01-05T10:02:30+00:00"))
    assert manual.status == "SKIPPED" and manual.trigger == "manual"
    jobs.status_of["sched-nightly-20260105T100100Z"] = "SUCCEEDED"
    scheduler.tick(at("2026-01-05T10:03:01+00:00"))
    assert statuses(scheduler) == [
        ("10:01", "SUCCEEDED"),
        ("10:02", "SKIPPED"),
        ("10:02", "SKIPPED"),
        ("10:03", "PENDING"),  # submitted; RUNNING from the next poll
    ]
    skipped = scheduler.get("nightly").runs[1]
    assert "sched-nightly-20260105T100100Z" in skipped.reason and skipped.submission_id is None
    assert jobs.started == ["sched-nightly-20260105T100100Z", "sched-nightly-20260105T100300Z"]


def test_a_going_run_is_polled_every_poll_interval_and_when_a_fire_is_due(
    tmp_path: Path,
) -> None:
    jobs = FakeJobs()
    scheduler = make(tmp_path, jobs, "*/5 * * * *", at("2026-01-05T10:00:30+00:00"))
    scheduler.tick(at("2026-01-05T10:05:00+00:00"))
    for now in minutes(at("2026-01-05T10:05:01+00:00"), at("2026-01-05T10:06:00+00:00"), 1):
        scheduler.tick(now)
    assert jobs.polls == 6  # one tick a second, one poll each poll_s
    scheduler.tick(at("2026-01-05T10:10:00+00:00"))  # a fire: its overlap rule polls at once
    assert jobs.polls == 7 and scheduler.get("nightly").runs[-1].status == "SKIPPED"


@pytest.mark.parametrize("death", ["before the submission", "after the submission"])
def test_a_restarted_scheduler_neither_misses_nor_repeats_a_fire(
    tmp_path: Path, death: str
) -> None:
    jobs = FakeJobs()
    start = at("2026-01-05T10:00:30+00:00")
    scheduler = make(tmp_path, jobs, "*/5 * * * *", start)
    jobs.die_before = death == "before the submission"
    jobs.die_after = death == "after the submission"
    with pytest.raises(Died):
        scheduler.tick_one("nightly", at("2026-01-05T10:05:00+00:00"))
    jobs.die_before = jobs.die_after = False

    # A new scheduler on the same store, as Ray restarts the actor, ticks on for an hour.
    restarted = Scheduler(ScheduleStore(str(tmp_path / "state")), jobs)
    for now in minutes(at("2026-01-05T10:05:02+00:00"), at("2026-01-05T11:04:02+00:00")):
        restarted.tick(now)
        for job_id in jobs.started:
            jobs.status_of[job_id] = "SUCCEEDED"
    fires = [run.fire_time.strftime("%H:%M") for run in restarted.get("nightly").runs]
    assert fires == [f"{h:02d}:{m:02d}" for h, m in [(10, m) for m in range(5, 60, 5)] + [(11, 0)]]
    assert len(jobs.started) == len(fires) == len(set(jobs.started))
    # The fire decided before the death was sent again under its id, not started again.
    assert jobs.calls.count("sched-nightly-20260105T100500Z") == 2
    assert {run.status for run in restarted.get("nightly").runs} == {"SUCCEEDED"}


def test_fires_missed_while_down_run_once_within_grace_and_are_recorded_beyond(
    tmp_path: Path,
) -> None:
    jobs = FakeJobs()
    start = at("2026-01-05T10:00:30+00:00")
    make(tmp_path, jobs, "*/5 * * * *", start, grace="12m")
    # Down from just after the add until 10:30:30.
    restarted = Scheduler(ScheduleStore(str(tmp_path / "state")), jobs)
    restarted.tick(at("2026-01-05T10:30:30+00:00"))
    assert statuses(restarted) == [
        ("10:05", "MISSED"),
        ("10:10", "MISSED"),
        ("10:15", "MISSED"),
        ("10:20", "COALESCED"),
        ("10:25", "COALESCED"),
        ("10:30", "PENDING"),
    ]
    assert jobs.started == ["sched-nightly-20260105T103000Z"]
    assert "beyond the grace window of 12m" in restarted.get("nightly").runs[0].reason

    # An hourly schedule down past its fire by more than the window: nothing runs at all.
    hourly = make(
        tmp_path / "hourly", jobs, "0 * * * *", at("2026-01-05T09:30:00+00:00"), grace="15m"
    )
    hourly.tick(at("2026-01-05T11:20:00+00:00"))
    assert statuses(hourly) == [("10:00", "MISSED"), ("11:00", "MISSED")]
    assert jobs.started == ["sched-nightly-20260105T103000Z"]


@pytest.mark.parametrize(
    ("night", "fire"),
    [
        # 02:30 does not exist: the clock jumps from 02:00 to 03:00; fired at 03:00, once.
        ("2026-03-28T22:00:00+00:00", "2026-03-29T03:00:00+02:00"),
        # 02:30 happens twice (summer time, then winter time): fired at the first, once.
        ("2026-10-24T22:00:00+00:00", "2026-10-25T02:30:00+02:00"),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_daily_fire_on_a_daylight_saving_night_fires_exactly_once(
    tmp_path: Path, night: str, fire: str
) -> None:
    jobs = FakeJobs(finish_at_once=True)
    start = at(night)
    scheduler = make(tmp_path, jobs, "30 2 * * *", start, tz="Europe/Berlin")
    for now in minutes(start, start + timedelta(hours=3)):
        scheduler.tick(now)
    # And a restart in the middle of the repeated hour (or just after the gap) adds nothing.
    restarted = Scheduler(ScheduleStore(str(tmp_path / "state")), jobs)
    for now in minutes(start + timedelta(hours=3), start + timedelta(hours=8)):
        restarted.tick(now)
    runs = restarted.get("nightly").runs
    assert [run.fire_time for run in runs] == [at(fire)]
    assert jobs.started == [submission_id("nightly", at(fire))]


def test_fire_times_across_daylight_saving() -> None:
    daily = CronSchedule("30 2 * * *", "Europe/Berlin")
    week = list(daily.fires_between(at("2026-03-26T00:00+01:00"), at("2026-04-01T00:00+02:00")))
    assert [f.astimezone(BERLIN).strftime("%d %H:%M%z") for f in week] == [
        "26 02:30+0100",
        "27 02:30+0100",
        "28 02:30+0100",
        "29 03:00+0200",
        "30 02:30+0200",
        "31 02:30+0200",
    ]
    fall = list(daily.fires_between(at("2026-10-24T12:00+02:00"), at("2026-10-26T12:00+01:00")))
    assert [f.astimezone(BERLIN).strftime("%d %H:%M%z") for f in fall] == [
        "25 02:30+0200",
        "26 02:30+0100",
    ]
    # With a `*` in the hour the schedule is a rhythm: every real hour fires, so the short day
    # has 23 fires and the long day 25.
    hourly = CronSchedule("0 * * * *", "Europe/Berlin")
    short = hourly.fires_between(at("2026-03-29T00:00+01:00"), at("2026-03-30T00:00+02:00"))
    long_ = hourly.fires_between(at("2026-10-25T00:00+02:00"), at("2026-10-26T00:00+01:00"))
    assert (len(list(short)), len(list(long_))) == (23, 25)
    # A rhythm in the hour named: the gap's fires are one, at its end; the repeated hour's once.
    quarter = CronSchedule("*/15 2 * * *", "Europe/Berlin")
    spring = list(quarter.fires_between(at("2026-03-29T00:00Z"), at("2026-03-29T12:00Z")))
    assert spring == [at("2026-03-29T03:00+02:00")]
    assert len(list(quarter.fires_between(at("2026-10-24T23:00Z"), at("2026-10-25T12:00Z")))) == 4


def test_submission_ids_are_derived_from_the_schedule_and_the_fire() -> None:
    fire = datetime(2026, 12, 7, 2, 0, tzinfo=BERLIN)
    assert submission_id("nightly", fire) == "sched-nightly-20261207T010000Z"
    assert submission_id("nightly", fire.astimezone(UTC)) == submission_id("nightly", fire)
    assert submission_id("nightly", fire, manual=True) == "sched-nightly-manual-20261207T010000Z"
    with pytest.raises(ValueError, match="aware"):
        submission_id("nightly", datetime(2026, 12, 7, 2, 0))


def test_a_paused_schedule_neither_runs_nor_catches_up(tmp_path: Path) -> None:
    jobs = FakeJobs(finish_at_once=True)
    scheduler = make(tmp_path, jobs, "*/10 * * * *", at("2026-01-05T10:00:30+00:00"))
    scheduler.pause("nightly", at("2026-01-05T10:05:00+00:00"))
    for now in minutes(at("2026-01-05T10:05:00+00:00"), at("2026-01-05T10:35:00+00:00")):
        scheduler.tick(now)
    scheduler.resume("nightly", at("2026-01-05T10:35:00+00:00"))
    for now in minutes(at("2026-01-05T10:35:00+00:00"), at("2026-01-05T10:45:00+00:00")):
        scheduler.tick(now)
    assert statuses(scheduler) == [("10:40", "SUCCEEDED")]


def test_a_failing_submission_is_retried_until_its_grace_window_ends(tmp_path: Path) -> None:
    jobs = FakeJobs()
    scheduler = make(tmp_path, jobs, "0 * * * *", at("2026-01-05T09:30:00+00:00"), grace="2m")
    jobs.fail = ConnectionError("Jobs API down")
    for now in minutes(at("2026-01-05T10:00:00+00:00"), at("2026-01-05T10:03:00+00:00")):
        scheduler.tick(now)
    run = scheduler.get("nightly").runs[-1]
    assert run.status == "FAILED" and "Jobs API down" in run.reason
    assert jobs.calls == ["sched-nightly-20260105T100000Z"] * 4 and not jobs.started

    jobs.fail = None
    scheduler.tick(at("2026-01-05T11:00:30+00:00"))
    del jobs.status_of["sched-nightly-20260105T110000Z"]  # the cluster forgot it
    scheduler.tick(at("2026-01-05T11:00:40+00:00"))
    assert "no longer knows" in scheduler.get("nightly").runs[-1].reason


def test_a_new_timetable_does_not_catch_up_on_the_old_ones_fires(tmp_path: Path) -> None:
    jobs = FakeJobs()
    scheduler = make(tmp_path, jobs, "0 2 * * *", at("2026-01-05T00:00:00+00:00"))
    spec = ScheduleSpec(name="nightly", job="docs", cron="0 1 * * *")
    assert scheduler.add(spec, JOB_CONFIG, at("2026-01-05T01:30:00+00:00"))[0] == "updated"
    assert scheduler.add(spec, JOB_CONFIG, at("2026-01-05T01:31:00+00:00"))[0] == "unchanged"
    scheduler.tick(at("2026-01-05T01:40:00+00:00"))
    assert not scheduler.get("nightly").runs


def test_the_schedules_file_validates_and_a_misspelt_key_is_named(tmp_path: Path) -> None:
    declared = load_schedule_file(DEFAULT_FILE).schedules
    assert [spec.name for spec in declared] == ["nightly-docs", "hourly-logs"]
    assert declared[0].grace == 3600 and declared[0].tz == "Europe/Berlin"

    bad = tmp_path / "schedules.yaml"
    bad.write_text("schedules:\n  - name: x\n    job: docs\n    crn: '0 2 * * *'\n")
    with pytest.raises(ConfigError) as error:
        load_schedule_file(bad)
    assert f"{bad}: schedules.0.crn: unknown key" in str(error.value)
    assert "schedules.0.cron: Field required" in str(error.value)

    bad.write_text(
        "schedules:\n  - {name: x, job: docs, cron: '0 2 * *', tz: Mars/Olympus, grace: 1y}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_schedule_file(bad)
    message = str(error.value)
    for key in ("cron: Value error, '0 2 * *': five fields", "tz: Value error", "grace:"):
        assert key in message


def test_apply_dry_run_checks_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["schedule", "apply", "--dry-run", "--profile", "local"]) == 0
    assert "nightly-docs: valid" in capsys.readouterr().out
    bad = tmp_path / "schedules.yaml"
    bad.write_text("schedules:\n  - {name: x, job: docs, cron: '0 2 * * *', gracee: 1h}\n")
    assert main(["schedule", "apply", "--dry-run", "--file", str(bad)]) == 2
    assert "schedules.0.gracee: unknown key" in capsys.readouterr().err


def test_show_prints_a_crontab_entry_and_a_raycronjob_manifest(
    capsys: pytest.CaptureFixture,
) -> None:
    args = ["schedule", "show", "nightly-docs", "--file", str(DEFAULT_FILE)]
    assert main([*args, "--crontab"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "CRON_TZ=Europe/Berlin" in lines
    entry = next(line for line in lines if line.startswith("0 2 * * * "))
    assert "refinery submit docs --config configs/docs.yaml" in entry
    assert r"--submission-id sched-nightly-docs-$(date -u +\%Y\%m\%dT\%H\%M00Z)" in entry

    assert main([*args, "--manifest"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCronJob")
    assert manifest["spec"]["schedule"] == "0 2 * * *"
    assert manifest["spec"]["timeZone"] == "Europe/Berlin"
    job = manifest["spec"]["jobTemplate"]["spec"]
    assert job["entrypoint"].startswith("python -m jobs.cli run docs --config configs/docs.yaml")
    assert job["clusterSelector"] == {"ray.io/cluster": "refinery"}

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "CRON_TZ=Europe/Berlin" in out and "kind: RayCronJob" in out


def test_exports_quote_values_and_expand_aliases() -> None:
    spec = ScheduleSpec(name="odd", job="logs", cron="@daily", set=["input=/data/my logs/50%"])
    entry = crontab(spec).splitlines()[-1]
    assert entry.startswith("0 0 * * * ") and r"'input=/data/my logs/50\%'" in entry
    assert raycronjob(spec)["spec"]["schedule"] == "0 0 * * *"
