"""Notifications about runs, through Apprise, so every service it knows works without code here.

An alert URL carries its credentials (an SMTP password, a webhook token), so the rules are:
the URL is shown only masked (``mask_url``); Apprise's own logger, which writes whole URLs
and request details at debug level, is kept out of the application's logs (its records are
only captured per delivery, to explain a failure, and scrubbed of the URL's secrets first);
and a delivery never raises and never waits longer than ``DELIVERY_TIMEOUT`` seconds, so a
dead mail server can't hold a worker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import apprise

DELIVERY_TIMEOUT = 10.0
MASK = "***"
_MAX_ERRORS = 5
_MAX_LINE = 300

log = logging.getLogger(__name__)

# Apprise logs loaded URLs (header tokens included) and request errors quoting them. Nothing
# of it reaches our handlers; the level is DEBUG only so a delivery can capture the detail.
_apprise_log = logging.getLogger("apprise")
_apprise_log.propagate = False
_apprise_log.setLevel(logging.DEBUG)

_LEVELS = {"info": apprise.NotifyType.INFO, "success": apprise.NotifyType.SUCCESS,
           "warning": apprise.NotifyType.WARNING, "failure": apprise.NotifyType.FAILURE}
_SECRET_KEYS = ("pass", "pw", "token", "key", "secret", "auth", "sig", "cred", "code")
_HOSTISH = re.compile(r"^(localhost|\[[0-9a-fA-F:.]+\]|[^/\s]*\.[^/\s]*)$")


# --- masking ----------------------------------------------------------------------------------

def mask_url(url: str) -> str:
    """The URL with its password and anything that looks like a token replaced by ``***``.

    No code per service: the password of ``user:password@``, values of query keys that
    name a secret (``pass``, ``token``, ``key``...) or set a header/parameter (``+X``,
    ``-x``, ``:x``), and host or path parts that look like keys (long, or letters mixed
    with digits) are masked. Host names, ports, e-mail addresses and short words stay, so
    the URL remains recognisable. It errs towards masking.
    """
    return _split_secrets(url)[0]


def _looks_secret(text: str) -> bool:
    if not text or "@" in text or text.startswith("#"):
        return False
    if len(text) >= 16:
        return True
    return len(text) >= 8 and any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


def _split_secrets(url: str) -> tuple[str, list[str]]:
    """(masked URL, the secret substrings it hid), the latter to scrub error text."""
    secrets: list[str] = []

    def hide(value: str) -> str:
        if value:
            secrets.append(value)
        return MASK

    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL at all: show none of it
        return (MASK if url else ""), ([url] if url else [])
    rest, hash_sep, fragment = rest.partition("#")
    rest, q_sep, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")

    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if _looks_secret(unquote(user)):
            user = hide(user)
        userinfo = user + (":" + hide(password) if colon else "")
    host, colon, port = _split_port(hostport)
    if colon and not port.isdigit():
        port = hide(port)
    if not _HOSTISH.match(host) and _looks_secret(unquote(host)):
        host = hide(host)
    masked = f"{scheme}://{userinfo}{at}{host}{colon}{port}"

    if slash:
        parts = [hide(p) if _looks_secret(unquote(p)) else p for p in path.split("/")]
        masked += "/" + "/".join(parts)
    if q_sep:
        pairs = []
        for pair in query.split("&"):
            key, eq, value = pair.partition("=")
            name = unquote(key).lower()
            if value and (name[:1] in "+-: " or any(w in name for w in _SECRET_KEYS)
                          or _looks_secret(unquote(value))):
                value = hide(value)
            pairs.append(key + eq + value)
        masked += "?" + "&".join(pairs)
    if hash_sep:
        masked += "#" + (hide(fragment) if _looks_secret(unquote(fragment)) else fragment)
    # both spellings of each secret, so scrubbing finds it quoted or not
    return masked, sorted({v for s in secrets for v in (s, unquote(s))}, key=len, reverse=True)


def _split_port(hostport: str) -> tuple[str, str, str]:
    if hostport.startswith("["):  # IPv6 literal
        end = hostport.find("]")
        if end != -1:
            return hostport[:end + 1], hostport[end + 1:end + 2], hostport[end + 2:]
    host, colon, port = hostport.partition(":")
    return host, colon, port


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, MASK)
    return " ".join(text.split())[:_MAX_LINE]


# --- messages ---------------------------------------------------------------------------------

_STATUS_WORDS = {"ok": "succeeded", "partial": "partly failed", "failed": "failed",
                 "cancelled": "was cancelled", "interrupted": "was interrupted",
                 "running": "is running", "queued": "is queued"}


def run_message(run: dict[str, Any]) -> tuple[str, str]:
    """Title and plain-text body for a finished run (a dict shaped like the API's Run).

    The title alone says what failed (it is all a phone notification shows); the body adds
    each destination's outcome and the first errors, enough to act on without logging in.
    """
    status = str(run.get("status") or "unknown")
    title = f"multibackup: {_subject(run)} {_STATUS_WORDS.get(status, status)}"
    lines = [f"Status: {status}" + (f" (exit code {run['exit_code']})"
                                    if run.get("exit_code") not in (None, 0) else "")]
    if run.get("trigger"):
        lines.append(f"Trigger: {run['trigger']}")
    for label, key in (("Started", "started_at"), ("Finished", "finished_at")):
        if run.get(key):
            lines.append(f"{label}: {_when(run[key])}")
    if run.get("duration") is not None:
        lines.append(f"Duration: {_duration(float(run['duration']))}")
    if run.get("bytes_added") is not None:
        lines.append(f"Added: {_size(int(run['bytes_added']))}")
    if run.get("snapshot"):
        lines.append(f"Snapshot: {run['snapshot']}")
    destinations = run.get("destinations") or []
    if destinations:
        lines += ["", "Destinations:"]
        for d in destinations:
            outcome = "ok" if d.get("ok") else f"FAILED: {_line(d.get('error') or 'no detail')}"
            lines.append(f"  {d.get('name', '?')}: {outcome}")
    lines += _listed("Errors", run.get("errors") or [])
    lines += _listed("Notes", run.get("notes") or [])
    return title, "\n".join(lines)


def summary_message(runs: list[dict[str, Any]], since: datetime) -> tuple[str, str]:
    """Title and body for the daily summary of ``runs`` (those finished after ``since``).

    Failures come first, one line per plan with its latest error, then a line per plan; a
    quiet day still sends a short message so silence is never mistaken for "all fine".
    """
    counts: dict[str, int] = {}
    for run in runs:
        counts[str(run.get("status"))] = counts.get(str(run.get("status")), 0) + 1
    bad = sum(counts.get(s, 0) for s in ("failed", "partial", "interrupted"))
    title = f"multibackup: daily summary, {len(runs)} run{'s' if len(runs) != 1 else ''}"
    title += f", {bad} with problems" if bad else ", all ok" if runs else ""
    lines = [f"Since {_when(since)}: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                          if runs else "no runs.")]
    per_plan: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: _sort_key(r.get("finished_at") or r.get("started_at"))):
        per_plan.setdefault(_subject(run), []).append(run)
    problems = [(name, rs[-1]) for name, rs in per_plan.items()
                if rs[-1].get("status") in ("failed", "partial", "interrupted")]
    if problems:
        lines += ["", "Needs attention:"]
        for name, last in problems:
            errors = last.get("errors") or [d.get("error") for d in last.get("destinations") or []
                                            if not d.get("ok") and d.get("error")]
            detail = f": {_line(errors[0])}" if errors else ""
            lines.append(f"  {name} {last.get('status')} at {_when(last.get('finished_at'))}"
                         f"{detail}")
    if per_plan:
        lines += ["", "Runs:"]
        for name, rs in sorted(per_plan.items()):
            tally = {}
            for r in rs:
                tally[str(r.get("status"))] = tally.get(str(r.get("status")), 0) + 1
            added = sum(int(r.get("bytes_added") or 0) for r in rs)
            lines.append(f"  {name}: " + ", ".join(f"{n} {s}" for s, n in sorted(tally.items()))
                         + f"; {_size(added)} added")
    return title, "\n".join(lines)


def _subject(run: dict[str, Any]) -> str:
    kind = run.get("kind") or "backup"
    name = run.get("plan") or run.get("migration") or "?"
    if kind == "restore":
        return f"restore from plan {name!r}"
    if kind == "migrate":
        return f"migration {name!r}"
    return f"plan {name!r}"


def _listed(label: str, items: list[Any]) -> list[str]:
    if not items:
        return []
    out = ["", f"{label}:"] + [f"  - {_line(i)}" for i in items[:_MAX_ERRORS]]
    if len(items) > _MAX_ERRORS:
        out.append(f"  ... and {len(items) - _MAX_ERRORS} more")
    return out


def _line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 500 else text[:497] + "..."


def _sort_key(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "?" if value is None else str(value)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --- delivery ---------------------------------------------------------------------------------

def send(urls: list[str], title: str, body: str, level: str = "info",
         timeout: float = DELIVERY_TIMEOUT) -> list[dict[str, Any]]:
    """Deliver to every URL at once; one ``{url (masked), ok, error}`` per URL, in order.

    Never raises for a failed delivery: an alert that can't be sent must not fail the run
    or the scheduler. ``level`` (info, success, warning, failure) sets the icon/colour for
    services that have one; each delivery gives up after ``timeout`` seconds.
    """
    if not urls:
        return []
    kind = _LEVELS.get(level, apprise.NotifyType.INFO)
    with ThreadPoolExecutor(max_workers=min(8, len(urls)),
                            thread_name_prefix="alert") as pool:
        results = list(pool.map(lambda u: _deliver(u, title, body, kind, timeout), urls))
    for r in results:
        if not r["ok"]:
            log.warning("alert to %s not delivered: %s", r["url"], r["error"])
    return results


def _deliver(url: str, title: str, body: str, kind: apprise.NotifyType,
             timeout: float) -> dict[str, Any]:
    masked, secrets = _split_secrets(url)
    result: dict[str, Any] = {"url": masked, "ok": False, "error": None}
    try:
        service = apprise.Apprise.instantiate(url)
        if service is None:
            result["error"] = "not a valid Apprise URL (check the scheme and its parameters)"
            return result
        # the socket timeouts end the abandoned attempt soon after the call's own deadline
        service.socket_connect_timeout = min(service.socket_connect_timeout, timeout)
        service.socket_read_timeout = min(service.socket_read_timeout, timeout)
        notifier = apprise.Apprise()
        notifier.add(service)
        outcome = notifier.notify(body=body, title=title, notify_type=kind,
                                  body_format=apprise.NotifyFormat.TEXT,
                                  timeout=timeout, log_level=logging.DEBUG)
        result["ok"] = bool(outcome)
        if not result["ok"]:
            result["error"] = _scrub(_explain(outcome), secrets) or "delivery failed"
    except Exception as e:  # an alert must never take the caller down with it
        result["error"] = _scrub(f"{type(e).__name__}: {e}", secrets)
    return result


def _explain(outcome: Any) -> str:
    """One line from Apprise's captured log: its first warning, plus the socket error."""
    entries = list(outcome.logs())
    headline = next((e.message for e in entries
                     if e.level in ("WARNING", "ERROR", "CRITICAL")), "")
    detail = next((e.message.partition(":")[2] for e in reversed(entries)
                   if e.message.startswith("Socket Exception:")), "")
    errno = re.search(r"\[Errno -?\d+\][^\"')]*", detail)
    detail = errno.group(0).strip() if errno else detail.strip()
    if detail and detail not in headline:
        return f"{headline.rstrip('.')}: {detail}" if headline else detail
    return headline
