"""The server's database: SQLite by default, PostgreSQL for larger deployments.

The schema is created and upgraded by Alembic on every start (``upgrade head``), so a new
release of the server migrates an existing database in place, on either engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from multibackup.errors import UsageError

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """An engine and a session factory for one database URL, upgraded to the latest schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False,
                                                                   "timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def describe(self) -> str:
        """The URL without its password."""
        return self.engine.url.render_as_string(hide_password=True)

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", MIGRATIONS)
        try:
            with self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise UsageError(f"database {self.describe()}: {_one_line(exc)}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed when the block ends without error, rolled back otherwise."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def _one_line(exc: SQLAlchemyError) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return " ".join(text.split())[:300]
