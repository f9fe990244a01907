"""``multibackup server``: the API, dashboard, scheduler and a worker in one process;
``multibackup worker``: more workers, in other regions, sharing the server's database."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any
from urllib.parse import urlsplit

from multibackup.cli.output import Printer
from multibackup.errors import UsageError

DATABASE_ENV = "MULTIBACKUP_DATABASE_URL"


def _database(args: argparse.Namespace) -> str | None:
    """The database URL: --database (no password in it: the process list would show it),
    else $MULTIBACKUP_DATABASE_URL, else None (SQLite in the state directory)."""
    if args.database:
        try:
            has_password = urlsplit(args.database).password is not None
        except ValueError:
            has_password = False
        if has_password:
            raise UsageError(f"--database must not contain a password: set {DATABASE_ENV} "
                             "instead, or PGPASSWORD / a ~/.pgpass file")
        return args.database
    return os.environ.get(DATABASE_ENV) or None


def cmd_server(args: argparse.Namespace, out: Printer) -> int:
    import uvicorn

    from multibackup.server.app import create_app
    from multibackup.server.logs import setup_logging
    from multibackup.server.settings import ServerSettings

    settings = ServerSettings(host=args.listen_host, port=args.port,
                              database_url=_database(args), workers=args.workers,
                              catch_up_missed=not args.no_catch_up, region=args.region,
                              worker_timeout=args.worker_timeout,
                              secure_cookies=args.secure_cookies)
    if args.state_dir:
        settings.state_dir = os.path.abspath(args.state_dir)
    if not 1 <= settings.port <= 65535:
        raise UsageError(f"--port {settings.port}: use 1 to 65535")
    if settings.workers < 1:
        raise UsageError("--workers must be at least 1")
    setup_logging(args.log_level)
    app = create_app(settings, announce=lambda text: print(text, flush=True))
    print(f"multibackup server on http://{settings.host}:{settings.port}/ "
          f"(API docs at /api/docs)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                access_log=False, log_config=None)
    return 0


def cmd_worker(args: argparse.Namespace, out: Printer) -> int:
    """A worker for one region: takes that region's queued runs from the server's database."""
    import signal
    import threading

    from multibackup.server.db import Database
    from multibackup.server.executor import LocalExecutor
    from multibackup.server.keyring import Keyring
    from multibackup.server.logs import log, setup_logging
    from multibackup.server.settings import ServerSettings

    database = _database(args)
    if not database:
        raise UsageError("a worker needs the server's database: give --database or set "
                         f"{DATABASE_ENV}")
    settings = ServerSettings(database_url=database, workers=args.workers, role="worker",
                              region=args.region, serves_unplaced=False)
    if args.state_dir:
        settings.state_dir = os.path.abspath(args.state_dir)
    if settings.workers < 1:
        raise UsageError("--workers must be at least 1")
    setup_logging(args.log_level)
    db = Database(settings.database())
    db.upgrade()  # a no-op when the server has migrated it already
    keyring = Keyring.load(settings.key_file, create=False)
    executor = LocalExecutor(db, keyring, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"multibackup worker for region {args.region!r} on {db.describe()}", flush=True)
    log().info("worker started", extra={"region": args.region, "database": db.describe()})
    stop.wait()
    executor.shutdown(wait=False)  # runs cut off now are found and retried by the server
    db.close()
    return 0


_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def _region(text: str) -> str:
    if not _REGION.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use lowercase letters, digits and '-'")
    return text


def _common(sp: Any, state_help: str) -> None:
    """The options server and worker share."""
    sp.add_argument("--state-dir", metavar="DIR", help=state_help)
    sp.add_argument("--workers", type=int, default=1, metavar="N",
                    help="runs executed at once (default 1)")
    sp.add_argument("--log-level", default="info",
                    choices=("debug", "info", "warning", "error"))


def add_server_parser(add: Any) -> None:
    """Register ``server`` through main's ``add(name, fn, help)``."""
    sp = add("server", cmd_server, "run the server: REST API, web dashboard, scheduler and "
                                   "worker (SQLite and 127.0.0.1:8080 by default)")
    sp.add_argument("--listen", dest="listen_host", default="127.0.0.1", metavar="HOST",
                    help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8080)
    sp.add_argument("--database", metavar="URL",
                    help="postgresql://user@host/db for larger deployments (password from "
                         f"${DATABASE_ENV}, PGPASSWORD or ~/.pgpass); default SQLite in the "
                         "state directory")
    _common(sp, "where the SQLite database, server key and caches live "
                "(default ~/.local/state/multibackup/server)")
    sp.add_argument("--no-catch-up", action="store_true",
                    help="do not run schedules missed while the server was down")
    sp.add_argument("--region", metavar="NAME", type=_region,
                    help="also run the plans placed in this region here (by default the "
                         "server runs the plans placed in no region)")
    sp.add_argument("--secure-cookies", action="store_true",
                    help="mark the session cookie Secure (when served through HTTPS, e.g. "
                         "behind a reverse proxy)")
    sp.add_argument("--worker-timeout", type=float, default=90.0, metavar="SECONDS",
                    help="give up a run whose worker sent no heartbeat for this long "
                         "(default 90)")

    sp = add("worker", cmd_worker, "run the server's queued runs for one region, near the "
                                   "data (shares the server's database and key)")
    sp.add_argument("--region", required=True, metavar="NAME", type=_region,
                    help="the region whose plans this worker runs, e.g. eu-west")
    sp.add_argument("--database", metavar="URL",
                    help="the server's database (password from "
                         f"${DATABASE_ENV}, PGPASSWORD or ~/.pgpass)")
    _common(sp, "where the server key (server.key) and caches are; default "
                "~/.local/state/multibackup/server")
