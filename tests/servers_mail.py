"""Fixtures for real alert receivers on loopback: an SMTP server and a webhook endpoint.

``smtp_server`` is aiosmtpd with AUTH (PLAIN/LOGIN) allowed over plain loopback, so Apprise
really logs in with the user and password in the URL, and a wrong password is refused;
``webhook_receiver`` is a stdlib HTTP server that keeps every POSTed JSON body and its
headers. Both run in threads of the test process and collect what they receive.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import _free_port

SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-secret-Zq4-do-not-leak"


@dataclass
class Received:
    """One accepted message: envelope addresses, the parsed message and the login used."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None

    def text(self) -> str:
        """Subject and every text part, decoded, for assertions."""
        parts = [str(self.message["Subject"] or "")]
        for part in self.message.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        return "\n".join(parts)


@dataclass
class SMTPServer:
    host: str
    port: int
    user: str
    password: str
    messages: list[Received] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)

    def url(self, to: str = "ops@example.com", password: str | None = None) -> str:
        """The Apprise URL that delivers here: plain SMTP (mode=insecure), with a login."""
        pw = self.password if password is None else password
        return (f"mailto://{self.user}:{pw}@{self.host}:{self.port}"
                f"?mode=insecure&from=backup@example.com&to={to}")

    def wait(self, count: int = 1, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)


class _Handler:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        login = session.auth_data.login.decode() if session.auth_data else None
        self.server.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                             message, login))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A real SMTP server on 127.0.0.1 that requires AUTH with SMTP_USER/SMTP_PASSWORD."""
    server = SMTPServer("127.0.0.1", _free_port(), SMTP_USER, SMTP_PASSWORD)

    def authenticator(smtp: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and data.login.decode() == server.user
              and data.password.decode() == server.password)
        server.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?",
                              ok))
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    controller = Controller(_Handler(server), hostname=server.host, port=server.port,
                            authenticator=authenticator, auth_required=True,
                            auth_require_tls=False)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class WebhookRequest:
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text if it was not JSON


@dataclass
class WebhookReceiver:
    host: str
    port: int
    requests: list[WebhookRequest] = field(default_factory=list)
    status: int = 200  # what to answer; a test may set 500 to see a refused delivery

    def url(self, path: str = "/hook", scheme: str = "json") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def wait(self, count: int = 1, timeout: float = 10) -> list[WebhookRequest]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.requests)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A stdlib HTTP server on 127.0.0.1 collecting POSTed bodies (JSON parsed) and headers."""
    receiver = WebhookReceiver("127.0.0.1", 0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            receiver.requests.append(WebhookRequest(self.path, dict(self.headers.items()), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
