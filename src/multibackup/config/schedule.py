"""When a plan runs: a 5-field cron expression or a readable shorthand.

The config only stores and checks schedules (the server runs them), but it checks them
fully, so a typo is reported when the file is loaded rather than as a backup that never
happened. Every form is also given as cron, the one form a scheduler has to understand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# (name, lowest, highest, names numbered from lowest)
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
_FULL_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")

FORMS = '"hourly", "daily HH:MM", "weekly DAY HH:MM" or cron "MIN HOUR DOM MON DOW"'


class ScheduleError(ValueError):
    """The schedule text is not one of the accepted forms; the message says why."""


@dataclass(frozen=True)
class Schedule:
    """A checked schedule: ``text`` as written, ``cron`` the same in 5-field cron form."""

    text: str
    cron: str

    def __str__(self) -> str:
        return self.text


def parse_schedule(text: str) -> Schedule:
    """Check a schedule; raises ScheduleError with a short reason."""
    words = text.split()
    if not words:
        raise ScheduleError(f"empty schedule: use {FORMS}")
    head = words[0].lower()
    if head == "hourly" and len(words) == 1:
        return Schedule(text, "0 * * * *")
    if head == "daily" and len(words) == 2:
        hour, minute = _time(words[1])
        return Schedule(text, f"{minute} {hour} * * *")
    if head == "weekly" and len(words) == 3:
        day = _day(words[1])
        hour, minute = _time(words[2])
        return Schedule(text, f"{minute} {hour} * * {day}")
    if head in ("hourly", "daily", "weekly"):
        raise ScheduleError(f"invalid schedule {text!r}: use {FORMS}")
    if len(words) != 5:
        raise ScheduleError(f"invalid schedule {text!r}: use {FORMS}")
    for word, spec in zip(words, _FIELDS, strict=True):
        _cron_field(word, *spec)
    return Schedule(text, " ".join(words))


def _time(word: str) -> tuple[int, int]:
    m = _TIME.match(word)
    if not m:
        raise ScheduleError(f"invalid time {word!r}: use HH:MM, 24-hour (e.g. 02:30)")
    return int(m.group(1)), int(m.group(2))


def _day(word: str) -> int:
    w = word.lower()
    for i, (short, full) in enumerate(zip(_DAYS, _FULL_DAYS, strict=True)):
        if w in (short, full):
            return i
    raise ScheduleError(f"invalid day {word!r}: use mon, tue, wed, thu, fri, sat or sun")


def _cron_field(word: str, name: str, lo: int, hi: int, names: tuple[str, ...]) -> None:
    for item in word.split(","):
        base, slash, step = item.partition("/")
        if slash and not (_number(step) and int(step) > 0):
            raise ScheduleError(f"invalid {name} {word!r}: a step must be a number above 0")
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        a = _cron_value(first, word, name, lo, hi, names)
        if dash:
            b = _cron_value(last, word, name, lo, hi, names)
            if a > b:
                raise ScheduleError(f"invalid {name} {word!r}: range {base} runs backwards")
        elif slash:
            raise ScheduleError(f"invalid {name} {word!r}: a step needs * or a range before it")


def _cron_value(text: str, word: str, name: str, lo: int, hi: int,
                names: tuple[str, ...]) -> int:
    if text.lower() in names:
        return names.index(text.lower()) + lo
    if not _number(text) or not lo <= int(text) <= hi:
        also = f" or {names[0]}-{names[-1]}" if names else ""
        raise ScheduleError(f"invalid {name} {word!r}: values run from {lo} to {hi}{also}")
    return int(text)


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()
