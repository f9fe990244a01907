"""Retention policy: which snapshots to keep (restic's rules) and forgetting the rest."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from multibackup.errors import UsageError
from multibackup.repository.snapshot import Snapshot

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$")


def parse_duration(text: str) -> tuple[int, int, int]:
    """'1y2m3d4h' -> (months, days, hours); restic's keep-within syntax, plus weeks."""
    m = _DURATION.match(text.strip())
    if not text or not m or not any(m.groups()):
        raise UsageError(f"invalid duration {text!r}: use e.g. 7d, 2w, 1m, 1y2m3d4h")
    y, mo, w, d, h = (int(g or 0) for g in m.groups())
    return y * 12 + mo, w * 7 + d, h


def subtract(t: datetime, months: int, days: int, hours: int) -> datetime:
    total = t.year * 12 + (t.month - 1) - months
    year, month = divmod(total, 12)
    day = min(t.day, [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
                      31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month])
    return t.replace(year=year, month=month + 1, day=day) - timedelta(days=days, hours=hours)


@dataclass
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: str = ""
    tags: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.last or self.hourly or self.daily or self.weekly or self.monthly
                    or self.yearly or self.within or self.tags)


_BUCKETS = [
    ("hourly", lambda t: t.strftime("%Y-%m-%d %H")),
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: "{}-W{:02}".format(*t.isocalendar()[:2])),
    ("monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", lambda t: t.strftime("%Y")),
]


@dataclass
class Decision:
    keep: list[tuple[Snapshot, list[str]]] = field(default_factory=list)  # with reasons
    remove: list[Snapshot] = field(default_factory=list)


def apply_policy(snapshots: list[Snapshot], policy: Policy) -> dict[tuple[str, tuple[str, ...]], Decision]:
    """Decide per group (host, paths), newest first, as restic does."""
    if policy.empty():
        raise UsageError("no retention policy given: nothing would be kept, so nothing is "
                         "removed (use --keep-last, --keep-daily, ...)")
    within = parse_duration(policy.within) if policy.within else None
    groups: dict[tuple[str, tuple[str, ...]], list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        groups[(s.hostname, tuple(sorted(s.paths)))].append(s)
    out = {}
    for key, snaps in groups.items():
        snaps.sort(key=lambda s: (s.time, s.id), reverse=True)
        decision = Decision()
        counters = {name: getattr(policy, name) for name, _ in _BUCKETS}
        last_bucket: dict[str, str] = {}
        cutoff = subtract(snaps[0].time, *within) if within else None
        for i, s in enumerate(snaps):
            reasons = []
            if i < policy.last:
                reasons.append("last")
            for name, fn in _BUCKETS:
                bucket = fn(s.time)
                if counters[name] > 0 and last_bucket.get(name) != bucket:
                    last_bucket[name] = bucket
                    counters[name] -= 1
                    reasons.append(name)
            if cutoff is not None and s.time >= cutoff:
                reasons.append("within " + policy.within)
            if policy.tags and set(policy.tags) & set(s.tags):
                reasons.append("tag")
            if reasons:
                decision.keep.append((s, reasons))
            else:
                decision.remove.append(s)
        out[key] = decision
    return out
