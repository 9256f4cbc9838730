"""Fire times of a cron expression in a time zone, as UTC instants, across daylight saving.

croniter walks the local wall clock as a plain calendar (naive datetimes); each wall time is
then mapped to the instants at which the zone's clocks show it:

- a wall time that does not exist (spring forward: 02:30 in Europe/Berlin on the last Sunday of
  March) fires at the first valid instant after it, the end of the gap (03:00 local); several
  such wall times of one gap fire once, together;
- a wall time that happens twice (fall back: 02:30 on the last Sunday of October) fires once, at
  its first occurrence, when the expression names the hour (`30 2 * * *`, `0 9-17 * * 1-5`):
  a job set for a time of day runs once that day. When the hour field holds a `*`
  (`*/15 * * * *`, `0 * * * *`, `5 */2 * * *`) the schedule is a rhythm rather than a time of
  day, and it fires in both passes of the repeated hour (Vixie cron treats such "wildcard"
  jobs the same way).

Everything here takes instants as arguments; nothing reads the clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def expand(expr: str) -> str:
    """The five fields of `expr` (an alias such as @daily is replaced by its fields)."""
    text = " ".join(expr.split())
    return ALIASES.get(text.lower(), text)


def check_cron(expr: str) -> str:
    """`expr` with its whitespace normalised; ValueError when it is not a five-field cron
    expression (or an alias) that ever fires. Crontab and Kubernetes take five fields, so the
    seconds and year fields croniter would accept are refused."""
    text = " ".join(expr.split())
    fields = expand(text).split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r}: five fields (minute hour day month weekday) or an @alias")
    if not croniter.is_valid(" ".join(fields)):
        raise ValueError(f"{expr!r}: not a valid cron expression")
    try:
        croniter(" ".join(fields), datetime(2000, 1, 1)).get_next(datetime)
    except ValueError:  # croniter's CroniterBadDateError: a date that never comes (Feb 30)
        raise ValueError(f"{expr!r}: never fires") from None
    return text


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r}: not an IANA time zone (such as UTC or Europe/Berlin)"
        ) from None


def utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"{instant!r}: a time-zone-aware datetime is needed")
    return instant.astimezone(UTC)


class CronSchedule:
    def __init__(self, expr: str, tz: str = "UTC") -> None:
        self.expr = expand(check_cron(expr))
        self.tz = zone(tz)
        self.both_passes = "*" in self.expr.split()[1]

    def fires_after(self, after: datetime) -> Iterator[datetime]:
        """Every fire strictly after `after`, ascending, each instant once (endless)."""
        after = utc(after)
        start = after.astimezone(self.tz).replace(tzinfo=None)
        # Wall times before `after`'s own can still fire after it when the clock is about to
        # go back (or just went back) and repeat them: start that much earlier.
        start -= self._fold_span(after) + timedelta(minutes=1)
        walls = croniter(self.expr, start)
        second_passes: list[datetime] = []  # heap: instants of repeated wall times' 2nd pass
        last: datetime | None = None
        while True:
            first, second = self._instants(walls.get_next(datetime))
            # First passes (and gap ends) come in order; a second pass comes later than its
            # wall time's first, by the size of the fold, so it waits in the heap for its turn.
            while second_passes and second_passes[0] <= first:
                instant = heapq.heappop(second_passes)
                if instant > after and instant != last:
                    last = instant
                    yield instant
            if second is not None:
                heapq.heappush(second_passes, second)
            if first > after and first != last:
                last = first
                yield first

    def next_fire(self, after: datetime) -> datetime:
        return next(self.fires_after(after))

    def fires_between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """The fires in (after, until], ascending."""
        until = utc(until)
        for instant in self.fires_after(after):
            if instant > until:
                return
            yield instant

    def _instants(self, wall: datetime) -> tuple[datetime, datetime | None]:
        """(the instant the wall time fires at, the instant of its second pass or None)."""
        early = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        late = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if early == late:
            return early, None
        if early < late:  # shown twice: fold=0 is the first pass
            return early, late if self.both_passes else None
        # Shown never: PEP 495 maps fold=0 with the offset before the gap and fold=1 with the
        # offset after it, so the gap's end lies between the two.
        return self._gap_end(late, early), None

    def _gap_end(self, lo: datetime, hi: datetime) -> datetime:
        before = lo.astimezone(self.tz).utcoffset()
        low, high = int(lo.timestamp()), int(hi.timestamp())
        while high - low > 1:
            mid = (low + high) // 2
            if datetime.fromtimestamp(mid, UTC).astimezone(self.tz).utcoffset() == before:
                low = mid
            else:
                high = mid
        return datetime.fromtimestamp(high, UTC)

    def _fold_span(self, around: datetime) -> timedelta:
        """How far the zone's offset moves within a day either side of `around`: the most a
        wall time can repeat by. Zero on all but the transition days."""
        day = timedelta(days=1)
        offsets = [
            (around + shift).astimezone(self.tz).utcoffset() or timedelta(0)
            for shift in (-day, timedelta(0), day)
        ]
        return max(offsets) - min(offsets)


def submission_id(name: str, fire_time: datetime, manual: bool = False) -> str:
    """The Ray job's id for one fire: the same schedule and fire time give the same id, so a
    scheduler that submits it again after a restart finds the job instead of starting another."""
    stamp = utc(fire_time).strftime("%Y%m%dT%H%M%SZ")
    return f"sched-{name}-manual-{stamp}" if manual else f"sched-{name}-{stamp}"
