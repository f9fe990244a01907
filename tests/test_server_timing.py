"""Cron maths for the scheduler: fire times in a plan's time zone, across DST, and misses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from multibackup.config.schedule import parse_schedule
from multibackup.server.timing import check_timezone, last_missed, next_fire

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(cron: str, tz: str, after: datetime, count: int) -> list[datetime]:
    out = []
    for _ in range(count):
        after = next_fire(cron, tz, after)
        out.append(after)
    return out


def local(moments: list[datetime], tz: str) -> list[str]:
    return [m.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M%z") for m in moments]


def test_daily_fires_at_local_wall_time_summer_and_winter() -> None:
    cron = parse_schedule("daily 02:00").cron
    assert next_fire(cron, BERLIN, utc(2026, 7, 1, 12)) == utc(2026, 7, 2, 0)  # CEST, +2
    assert next_fire(cron, BERLIN, utc(2026, 12, 1, 12)) == utc(2026, 12, 2, 1)  # CET, +1
    assert next_fire(cron, "UTC", utc(2026, 12, 1, 12)) == utc(2026, 12, 2, 2)
    result = next_fire(cron, BERLIN, utc(2026, 7, 1, 12))
    assert result.tzinfo is UTC


def test_strictly_after() -> None:
    at = utc(2026, 12, 2, 1)  # exactly 02:00 Berlin
    assert next_fire("0 2 * * *", BERLIN, at) == utc(2026, 12, 3, 1)
    assert next_fire("0 2 * * *", BERLIN, at - timedelta(seconds=1)) == at
    # an aware non-UTC input means the same instant
    assert next_fire("0 2 * * *", BERLIN, at.astimezone(ZoneInfo(NEW_YORK))) == utc(2026, 12, 3, 1)


def test_spring_forward_nonexistent_time_fires_once_when_clocks_jump() -> None:
    # Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day
    got = fires("30 2 * * *", BERLIN, utc(2026, 3, 27, 12), 4)
    assert local(got, BERLIN) == ["03-28 02:30+0100", "03-29 03:00+0200",
                                  "03-30 02:30+0200", "03-31 02:30+0200"]
    # New York 2026-03-08: 02:00 EST jumps to 03:00 EDT
    got = fires("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), 3)
    assert local(got, NEW_YORK) == ["03-08 03:00-0400", "03-09 02:30-0400", "03-10 02:30-0400"]


def test_spring_forward_interval_schedule_has_no_duplicate() -> None:
    got = fires("*/20 * * * *", BERLIN, utc(2026, 3, 29, 0, 10), 4)
    assert local(got, BERLIN) == ["03-29 01:20+0100", "03-29 01:40+0100",
                                  "03-29 03:00+0200", "03-29 03:20+0200"]


def test_fall_back_ambiguous_time_fires_once() -> None:
    # Berlin 2026-10-25: 03:00 CEST goes back to 02:00 CET, 02:30 happens twice
    got = fires("30 2 * * *", BERLIN, utc(2026, 10, 23, 12), 4)
    assert local(got, BERLIN) == ["10-24 02:30+0200", "10-25 02:30+0200",
                                  "10-26 02:30+0100", "10-27 02:30+0100"]
    # New York 2026-11-01: 02:00 EDT goes back to 01:00 EST, 01:30 happens twice
    got = fires("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), 3)
    assert local(got, NEW_YORK) == ["11-01 01:30-0400", "11-02 01:30-0500", "11-03 01:30-0500"]


def test_fall_back_hourly_fires_every_real_hour() -> None:
    got = fires("0 * * * *", BERLIN, utc(2026, 10, 24, 23, 30), 4)
    assert got == [utc(2026, 10, 25, h) for h in range(0, 4)]
    assert local(got, BERLIN) == ["10-25 02:00+0200", "10-25 02:00+0100",
                                  "10-25 03:00+0100", "10-25 04:00+0100"]


def test_every_minute_across_both_changes_is_every_real_minute() -> None:
    start = utc(2026, 10, 24, 23, 50)
    got = fires("* * * * *", BERLIN, start, 240)
    assert got == [start + timedelta(minutes=i) for i in range(1, 241)]
    start = utc(2026, 3, 29, 0, 50)  # 01:50 CET, ten minutes before the jump
    got = fires("* * * * *", BERLIN, start, 20)
    assert got == [start + timedelta(minutes=i) for i in range(1, 21)]
    assert last_missed("* * * * *", BERLIN, start, start + timedelta(seconds=90)) \
        == start + timedelta(minutes=1)


def test_far_from_a_change_seconds_do_not_matter() -> None:
    assert next_fire("0 2 * * *", BERLIN, utc(2026, 12, 2, 0, 59, 59, 999999)) \
        == utc(2026, 12, 2, 1)
    assert next_fire("0 2 * * *", BERLIN, utc(2026, 12, 2, 1, 0, 0, 1)) == utc(2026, 12, 3, 1)
    assert last_missed("0 2 * * *", BERLIN, utc(2026, 12, 1), utc(2026, 12, 2, 1, 0, 0, 1)) \
        == utc(2026, 12, 2, 1)
    assert last_missed("0 2 * * *", BERLIN, utc(2026, 12, 1, 1), utc(2026, 12, 2, 0, 59, 59)) \
        is None


def test_weekly_with_day_names_and_seven_is_sunday() -> None:
    cron = parse_schedule("weekly mon 03:00").cron
    after = utc(2026, 11, 30, 12)  # a Monday, after 03:00 Berlin
    assert next_fire(cron, BERLIN, after) == utc(2026, 12, 7, 2)
    assert next_fire("0 3 * * mon", BERLIN, after) == utc(2026, 12, 7, 2)
    sunday = next_fire("0 3 * * 7", BERLIN, after)
    assert sunday == next_fire("0 3 * * sun", BERLIN, after) == utc(2026, 12, 6, 2)
    got = fires("15 22 * * mon-fri", NEW_YORK, utc(2026, 12, 4, 12), 3)  # from a Friday
    assert local(got, NEW_YORK) == ["12-04 22:15-0500", "12-07 22:15-0500", "12-08 22:15-0500"]


def test_steps_ranges_and_lists() -> None:
    got = fires("*/15 1-5/2 * * *", "UTC", utc(2026, 12, 1, 0), 6)
    assert [m.strftime("%H:%M") for m in got] == ["01:00", "01:15", "01:30", "01:45",
                                                  "03:00", "03:15"]
    got = fires("0 0 1,15 jan,jul *", "UTC", utc(2026, 12, 1), 3)
    assert got == [utc(2027, 1, 1), utc(2027, 1, 15), utc(2027, 7, 1)]


def test_last_missed() -> None:
    cron = "0 2 * * *"
    down, up = utc(2026, 11, 27, 12), utc(2026, 11, 30, 12)
    assert last_missed(cron, BERLIN, down, up) == utc(2026, 11, 30, 1)  # 02:00 CET today
    assert last_missed(cron, BERLIN, utc(2026, 11, 30, 1), up) is None  # (since, now]
    assert last_missed(cron, BERLIN, down, utc(2026, 11, 30, 1)) == utc(2026, 11, 30, 1)
    assert last_missed(cron, BERLIN, utc(2026, 11, 30, 2), up) is None
    assert last_missed(cron, BERLIN, up, down) is None
    # weekly, down for three weeks: only the latest counts
    assert last_missed("0 3 * * mon", BERLIN, utc(2026, 11, 1), up) == utc(2026, 11, 30, 2)
    # across the autumn fold, the latest real occurrence of an hourly schedule
    assert last_missed("0 * * * *", BERLIN, utc(2026, 10, 24, 22), utc(2026, 10, 25, 1, 30)) \
        == utc(2026, 10, 25, 1)
    # a rare schedule with no fire in the window, and one that never fires at all
    assert last_missed("0 0 29 2 *", "UTC", utc(2026, 3, 1), utc(2027, 12, 1)) is None
    assert last_missed("0 0 29 2 *", "UTC", utc(2026, 3, 1), utc(2028, 3, 1)) == utc(2028, 2, 29)


def test_never_firing_and_naive_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="never fires"):
        next_fire("0 0 31 2 *", "UTC", utc(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        next_fire("0 2 * * *", "UTC", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        last_missed("0 2 * * *", "UTC", datetime(2026, 1, 1), utc(2026, 1, 2))


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "berlin", "../etc/passwd", "/etc/localtime",
                                  "Europe/Berlin "])
def test_bad_time_zone(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown time zone .* \(use an IANA name such as"):
        check_timezone(name)
    with pytest.raises(ValueError, match="unknown time zone"):
        next_fire("0 2 * * *", name, utc(2026, 1, 1))


def test_good_time_zones() -> None:
    assert check_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert check_timezone("UTC").key == "UTC"
    assert check_timezone("America/Argentina/Buenos_Aires").key == "America/Argentina/Buenos_Aires"
