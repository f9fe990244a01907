"""Structured logs: one JSON object per line on stderr, for journald, Loki or jq.

Request lines carry method, path, status, duration and user id; never a query string (it
may carry a token), a body or a header.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

LOGGER = "multibackup.server"
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                doc[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            doc["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(doc, default=str)


def setup_logging(level: str = "info") -> None:
    """Send the server's logs (and uvicorn's errors) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER, "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level.upper())
        log.propagate = False


def log() -> logging.Logger:
    return logging.getLogger(LOGGER)


class RequestTimer:
    """Measures one request for its log line."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)
