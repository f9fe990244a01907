"""How one server process is set up: where its database, key and state live, where it listens.

Everything has an embedded default (SQLite and a key file in the state directory, one worker
in the process, 127.0.0.1:8080), so ``multibackup server`` needs no other service.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from multibackup.store.lag import state_dir


@dataclass
class ServerSettings:
    """One server's settings; ``database_url`` None means SQLite in ``state_dir``."""

    state_dir: str = field(default_factory=lambda: os.path.join(state_dir(), "server"))
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1  # runs executed at once by the in-process worker
    catch_up_missed: bool = True  # a schedule missed while the server was down runs once
    retry_interrupted: bool = True  # a run cut off by a stopped server runs once more
    tick_seconds: float = 5.0  # how often the scheduler looks at the clock
    session_hours: int = 12
    secure_cookies: bool = False  # set behind HTTPS
    summary_hour: int = 7  # UTC hour of the daily summary alert
    #: the region this process's worker serves: runs of plans placed in it (and, for the
    #: server, runs of plans with no region)
    region: str | None = None
    serves_unplaced: bool = True  # False for a regional worker: only its region's runs
    role: str = "server"  # or "worker": names the process in each run's ``worker``
    worker_timeout: float = 90.0  # seconds without a heartbeat before a run is given up

    def database(self) -> str:
        """The SQLAlchemy URL of the database."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):  # psycopg 3, not the psycopg2 default
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return "sqlite:///" + os.path.join(self.state_dir, "server.sqlite")

    @property
    def organisations_root(self) -> str:
        """One folder per organisation: the only place on the server its users may back up
        from, keep a local destination in, or restore to."""
        return os.path.join(self.state_dir, "organisations")

    @property
    def key_file(self) -> str:
        return os.path.join(self.state_dir, "server.key")
