"""Alerts through Apprise to real receivers on loopback: SMTP with a login, and a webhook."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import _free_port
from servers_mail import (  # noqa: F401 - the fixtures
    SMTP_PASSWORD,
    SMTPServer,
    WebhookReceiver,
    smtp_server,
    webhook_receiver,
)

from multibackup.server.alerts import mask_url, run_message, send, summary_message


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}" for r in self.records)


@pytest.fixture
def app_log() -> Iterator[_Collect]:
    """What the application's own handlers (on the root logger) would receive, at DEBUG.

    pytest's caplog also hooks non-propagating loggers such as Apprise's, so it would show
    records the application never sees; this handler sees only what reaches the root.
    """
    handler, root = _Collect(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning")

FAILED_RUN = {
    "id": 17, "plan": "web", "kind": "backup", "status": "failed", "trigger": "schedule",
    "started_at": "2026-11-30T02:00:00+00:00", "finished_at": "2026-11-30T02:01:05+00:00",
    "duration": 65.2, "bytes_added": 0, "exit_code": 1,
    "destinations": [{"name": "s3-main", "ok": False, "error": "connection refused by s3"},
                     {"name": "local", "ok": False, "error": "disk full"}],
    "errors": ["source /srv/www: permission denied"] + [f"error {i}" for i in range(8)],
    "notes": [],
}


def test_failure_email_arrives_with_plan_and_error(smtp_server: SMTPServer) -> None:  # noqa: F811
    title, body = run_message(FAILED_RUN)
    results = send([smtp_server.url()], title, body, level="failure")
    assert results == [{"url": mask_url(smtp_server.url()), "ok": True, "error": None}]
    [mail] = smtp_server.wait(1)
    assert mail.login == smtp_server.user  # Apprise really logged in
    assert mail.rcpt_tos == ["ops@example.com"]
    assert mail.message["Subject"] == "multibackup: plan 'web' failed"
    text = mail.text()
    assert "source /srv/www: permission denied" in text
    assert "s3-main" in text and "connection refused by s3" in text


def test_wrong_smtp_password_is_a_failure_without_the_password(
        smtp_server: SMTPServer, app_log: _Collect) -> None:  # noqa: F811
    wrong = "wrong-pw-Xy81-secret"
    [result] = send([smtp_server.url(password=wrong)], "t", "b")
    assert result["ok"] is False
    assert "Authentication credentials invalid" in result["error"]
    assert smtp_server.messages == []
    assert smtp_server.logins and all(login == (smtp_server.user, False)
                                      for login in smtp_server.logins)
    assert not [r for r in app_log.records if r.name.startswith("apprise")]
    assert "not delivered" in app_log.text()  # our own one-line warning, masked
    for text in (repr(result), app_log.text()):
        assert wrong not in text and SMTP_PASSWORD not in text


def test_webhook_receives_title_and_body(webhook_receiver: WebhookReceiver) -> None:  # noqa: F811
    url = webhook_receiver.url("/hook") + "?+X-Auth-Token=hooktoken-5Rt9"
    results = send([url], "multibackup: plan 'db' succeeded", "all fine\nsecond line")
    assert results[0]["ok"] is True and results[0]["error"] is None
    assert "hooktoken-5Rt9" not in results[0]["url"]
    [request] = webhook_receiver.wait(1)
    assert request.path == "/hook"
    assert request.body["title"] == "multibackup: plan 'db' succeeded"
    assert request.body["message"] == "all fine\nsecond line"
    assert request.headers["X-Auth-Token"] == "hooktoken-5Rt9"


def test_refused_webhook_and_dead_port_give_one_line_errors(
        webhook_receiver: WebhookReceiver, app_log: _Collect) -> None:  # noqa: F811
    webhook_receiver.status = 500
    secret = "deadtoken-Q2w3e4r5"
    dead = f"json://hook:{secret}@127.0.0.1:{_free_port()}/x?+Authorization=Bearer%20{secret}"
    refused = webhook_receiver.url() + f"?token={secret}"
    started = time.monotonic()
    results = send([dead, refused, "notaservice://whatever"], "t", "b")
    assert time.monotonic() - started < 15
    assert [r["ok"] for r in results] == [False, False, False]
    for r in results:
        assert r["error"] and "\n" not in r["error"]
    assert "refused" in results[0]["error"].lower()
    assert "not a valid Apprise URL" in results[2]["error"]
    assert len(webhook_receiver.requests) == 1  # it was reached, and answered 500
    assert not [r for r in app_log.records if r.name.startswith("apprise")]
    for text in (repr(results), app_log.text()):
        assert "deadtoken" not in text


def test_silent_smtp_server_is_given_up_on_in_time() -> None:
    """A server that accepts the connection but never greets must not hold the caller."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # connections complete in the backlog; nothing ever answers
        port = silent.getsockname()[1]
        url = (f"mailto://alerts:{SMTP_PASSWORD}@127.0.0.1:{port}"
               "?mode=insecure&from=backup@example.com&to=ops@example.com")
        started = time.monotonic()
        [result] = send([url], "t", "b", timeout=2)
        elapsed = time.monotonic() - started
    assert result["ok"] is False and result["error"]
    assert SMTP_PASSWORD not in repr(result)
    assert elapsed < 6


def test_send_to_nothing() -> None:
    assert send([], "t", "b") == []


@pytest.mark.parametrize(("url", "hidden", "kept"), [
    ("mailto://alerts:pa55-word@smtp.example.com:587?to=ops@example.com",
     ["pa55-word"], ["mailto://alerts:***@smtp.example.com:587", "to=ops@example.com"]),
    ("mailtos://me%40gmail.com:app%20pass@gmail.com", ["app%20pass", "app pass"], ["gmail.com"]),
    ("json://hooks.example.com/notify?+X-Token=abc&-apikey=k1", ["abc", "k1"],
     ["json://hooks.example.com/notify?+X-Token=***&-apikey=***"]),
    ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123",
     ["AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"], ["tgram://123456789:***/"]),
    ("discord://1234567890123456789/Zr8xKq2-token_value_1234", ["Zr8xKq2-token_value_1234",
                                                                 "1234567890123456789"],
     ["discord://***/***"]),
    ("ntfy://ntfy.sh/backups?auth=tk_abcdef", ["tk_abcdef"], ["ntfy://ntfy.sh/backups?auth=***"]),
    ("json://[::1]:8080/x?token=t0k", ["t0k"], ["json://[::1]:8080/x"]),
])
def test_mask_url(url: str, hidden: list[str], kept: list[str]) -> None:
    masked = mask_url(url)
    for h in hidden:
        assert h not in masked
    for k in kept:
        assert k in masked
    assert mask_url(masked) == masked  # masking is stable, so a masked URL can be shown again


def test_run_message_ok_partial_failed() -> None:
    ok = {"plan": "web", "kind": "backup", "status": "ok", "trigger": "manual",
          "started_at": datetime(2026, 11, 30, 2, tzinfo=UTC), "duration": 3725,
          "bytes_added": 5 * 1024 * 1024, "snapshot": "a1b2c3d4",
          "destinations": [{"name": "s3-main", "ok": True, "error": None}],
          "errors": [], "notes": ["3 files skipped (vanished)"]}
    title, body = run_message(ok)
    assert title == "multibackup: plan 'web' succeeded"
    assert "Duration: 1 h 2 min" in body and "Added: 5.0 MiB" in body
    assert "s3-main: ok" in body and "3 files skipped" in body
    assert "Errors" not in body and "2026-11-30 02:00:00 UTC" in body

    partial = dict(ok, status="partial", destinations=[
        {"name": "s3-main", "ok": True, "error": None},
        {"name": "b2", "ok": False, "error": "403 Forbidden:\nbucket policy"}])
    title, body = run_message(partial)
    assert title == "multibackup: plan 'web' partly failed"
    assert "b2: FAILED: 403 Forbidden: bucket policy" in body

    title, body = run_message(FAILED_RUN)
    assert title == "multibackup: plan 'web' failed"
    assert "Status: failed (exit code 1)" in body
    assert body.index("permission denied") < body.index("error 3")
    assert "error 4" not in body and "... and 4 more" in body  # the first errors only

    title, _ = run_message({"plan": "web", "kind": "restore", "status": "ok"})
    assert title == "multibackup: restore from plan 'web' succeeded"
    title, _ = run_message({"migration": "to-b2", "kind": "migrate", "status": "cancelled"})
    assert title == "multibackup: migration 'to-b2' was cancelled"


def test_summary_message() -> None:
    since = datetime(2026, 11, 29, 6, tzinfo=UTC)
    runs = [
        {"plan": "web", "kind": "backup", "status": "ok", "bytes_added": 2048,
         "finished_at": "2026-11-29T08:00:00+00:00"},
        {"plan": "web", "kind": "backup", "status": "ok", "bytes_added": 2048,
         "finished_at": "2026-11-30T02:00:00+00:00"},
        FAILED_RUN,
        dict(FAILED_RUN, plan="db", status="ok", finished_at="2026-11-30T04:00:00+00:00"),
    ]
    title, body = summary_message(runs, since)
    assert title == "multibackup: daily summary, 4 runs, 1 with problems"
    assert "Since 2026-11-29 06:00:00 UTC: 1 failed, 3 ok" in body
    assert "plan 'web' failed at 2026-11-30 02:01:05 UTC: source /srv/www" in body
    assert "plan 'db': 1 ok" in body
    quiet_title, quiet_body = summary_message([], since)
    assert quiet_title == "multibackup: daily summary, 0 runs"
    assert "no runs" in quiet_body
