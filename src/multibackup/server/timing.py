"""Cron maths for the scheduler: when a plan fires next, and whether it missed a fire.

A schedule means wall-clock time in the plan's time zone ("0 2 * * *" in Europe/Berlin is
02:00 in Berlin, summer or winter), but the scheduler keeps and compares instants in UTC.
croniter walks naive wall-clock times here and this module maps each one to UTC itself, so
the two daylight-saving edge cases follow a rule we chose rather than a library accident:

- a wall time that does not exist (the hour skipped in spring) fires once, at the first
  minute that does exist after it (the moment the clocks jump), like Vixie cron;
- a wall time that happens twice (the hour repeated in autumn) fires once, at its first
  occurrence, unless the hour field is a wildcard ("*", "*/2"): such interval schedules
  fire at every real occurrence, so an hourly backup keeps running every real hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

# Wider than any daylight-saving shift in the tz database (2 hours at most): a wall time
# this far from an instant's own wall time can't map to an instant on the other side of it.
_MARGIN = timedelta(hours=3)
_MINUTE = timedelta(minutes=1)


def check_timezone(name: str) -> ZoneInfo:
    """The zone for an IANA name; a ValueError that says what to write instead otherwise."""
    hint = f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)"
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(hint)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(hint) from None


def next_fire(cron: str, tz: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware), as an aware UTC datetime.

    Raises ValueError if ``after`` is naive or the expression never matches a real date
    (e.g. "0 0 31 2 *").
    """
    zone = check_timezone(tz)
    after = _utc(after, "after")
    # Far from a clock change, wall times map to instants in order, so the walk can start
    # at ``after`` and stop at the first match; near one it looks around by _MARGIN.
    start = _wall(after, zone) - (timedelta(0) if _steady(zone, after) else _MARGIN)
    best: datetime | None = None
    horizon: datetime | None = None
    for wall in _walk(cron, start, forward=True):
        if horizon is not None and wall > horizon:
            break
        for instant in _instants(wall, zone, _hour_is_wildcard(cron)):
            if instant > after and (best is None or instant < best):
                best = instant
        if best is not None and horizon is None:
            horizon = wall if _steady(zone, best) else wall + _MARGIN
    assert best is not None  # _walk only ends by raising
    return best


def last_missed(cron: str, tz: str, since: datetime, now: datetime) -> datetime | None:
    """The latest fire time in (since, now] as aware UTC, or None if none fell in it.

    The scheduler runs a plan once at start when it missed fires while the server was down,
    however many it missed; this is the one to record as the catch-up run's due time.
    """
    zone = check_timezone(tz)
    since, now = _utc(since, "since"), _utc(now, "now")
    if now <= since:
        return None
    floor = _wall(since, zone) - _MARGIN
    start = _wall(now, zone) + (_MINUTE if _steady(zone, now) else _MARGIN)
    best: datetime | None = None
    horizon: datetime | None = None
    walls = _walk(cron, start, forward=False)
    try:
        for wall in walls:
            if wall < floor or (horizon is not None and wall < horizon):
                break
            for instant in _instants(wall, zone, _hour_is_wildcard(cron)):
                if since < instant <= now and (best is None or instant > best):
                    best = instant
            if best is not None and horizon is None:
                horizon = wall if _steady(zone, best) else wall - _MARGIN
    except _NoMoreFires:
        return best  # no earlier match at all: whatever was found is the answer
    return best


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _walk(cron: str, start: datetime, forward: bool) -> Iterator[datetime]:
    """Naive wall times matching ``cron``, strictly after (or before) ``start``.

    A bad expression raises here, at the call; running out of matches raises
    ``_NoMoreFires`` from the iteration.
    """
    try:
        it = croniter(cron, start)
    except (CroniterError, ValueError, KeyError) as e:
        raise ValueError(f"invalid cron expression {cron!r}: {e}") from None
    return _steps(it.get_next if forward else it.get_prev, cron)


class _NoMoreFires(ValueError):
    pass


def _steps(step: Callable[[type[datetime]], datetime], cron: str) -> Iterator[datetime]:
    while True:
        try:
            yield step(datetime)
        except CroniterError:
            raise _NoMoreFires(f"cron expression {cron!r} never fires") from None


def _steady(zone: ZoneInfo, moment: datetime) -> bool:
    """No clock change within _MARGIN of ``moment`` (so nearby wall times map in order)."""
    offset = moment.astimezone(zone).utcoffset()
    return all((moment + d).astimezone(zone).utcoffset() == offset for d in (-_MARGIN, _MARGIN))


def _hour_is_wildcard(cron: str) -> bool:
    return cron.split()[1].startswith("*")


def _instants(wall: datetime, zone: ZoneInfo, every_occurrence: bool) -> list[datetime]:
    """The UTC instants a naive wall time stands for in ``zone`` (see the module's rules)."""
    found = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if _wall(instant, zone) == wall and instant not in found:
            found.append(instant)
    if not found:  # skipped by a spring jump: fire when the clocks reach an existing minute
        later = wall
        while not found:
            later += _MINUTE
            instant = later.replace(tzinfo=zone).astimezone(UTC)
            if _wall(instant, zone) == later:
                found.append(instant)
    found.sort()
    return found if every_occurrence else found[:1]
