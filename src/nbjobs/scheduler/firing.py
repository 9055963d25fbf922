"""When a schedule fires: cron times in a time zone, and which missed times to catch up.

Pure functions of a cron expression, a zone and instants (UTC-aware datetimes):
the clock is always an argument, so schedules are testable with a fake one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from croniter import croniter

# A fire time at most this old still counts as on time (a loop tick or a slow pass late),
# not as missed: catch-up policies only apply to times older than this.
MISFIRE_GRACE = timedelta(seconds=60)
MAX_CATCH_UP = 1000  # fires made at once by catch-up "all", the newest kept


class Overlap(StrEnum):
    """What a fire does while the schedule's previous run is still going."""

    SKIP = "skip"  # do not start another
    QUEUE = "queue"  # start it once the previous one has ended
    ALLOW = "allow"  # start it now, beside the previous one


class CatchUp(StrEnum):
    """What a schedule does with fire times missed while no scheduler was running."""

    NONE = "none"  # drop them
    LATEST = "latest"  # fire once, for the latest of them
    ALL = "all"  # fire each of them, oldest first


def valid_cron(cron: str) -> bool:
    return len(cron.split()) in (5, 6) and croniter.is_valid(cron)


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC (daylight-saving changes follow the zone)."""
    local = after.astimezone(ZoneInfo(timezone))
    return croniter(cron, local).get_next(datetime).astimezone(UTC)


def upcoming(cron: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    times: list[datetime] = []
    for _ in range(count):
        after = next_fire(cron, timezone, after)
        times.append(after)
    return times


def fires_due(cron: str, timezone: str, next_fire_at: datetime, now: datetime, catch_up: CatchUp) -> list[datetime]:
    """The fire times to act on now, oldest first: due ones (from `next_fire_at` up to `now`).

    On-time times (within MISFIRE_GRACE of now) always fire; older, missed ones by
    the catch-up policy: none of them, the latest of all due times, or all of them
    (at most MAX_CATCH_UP, the newest). Walks back from `now`, so a long downtime
    costs no more than the fires it makes.
    """
    if next_fire_at > now:
        return []
    if catch_up is CatchUp.LATEST:
        return _backwards(cron, timezone, now, next_fire_at, 1)
    if catch_up is CatchUp.ALL:
        return _backwards(cron, timezone, now, next_fire_at, MAX_CATCH_UP)
    return _backwards(cron, timezone, now, max(next_fire_at, now - MISFIRE_GRACE), MAX_CATCH_UP)


def _backwards(cron: str, timezone: str, now: datetime, earliest: datetime, limit: int) -> list[datetime]:
    """Fire times in [earliest, now], at most `limit` of the newest, oldest first."""
    # croniter's get_prev is strictly before its start: start a microsecond after now to include now.
    it = croniter(cron, (now + timedelta(microseconds=1)).astimezone(ZoneInfo(timezone)))
    times: list[datetime] = []
    while len(times) < limit:
        at = it.get_prev(datetime).astimezone(UTC)
        if at < earliest:
            break
        times.append(at)
    return times[::-1]
