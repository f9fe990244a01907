"""The server as one ASGI app: API, dashboard, metrics, and the scheduler and worker.

``create_app`` opens (and migrates) the database, loads the server key and creates the
first administrator on the first start; the scheduler starts with the app's lifespan, so
tests can drive an app without background work (``background=False``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy import func, select

from multibackup import __version__
from multibackup.server import auth
from multibackup.server import models as m
from multibackup.server.api import (
    accounts,
    alerts,
    migrations,
    overview,
    plans,
    problems,
    runs,
    snapshots,
)
from multibackup.server.api.configured import destinations, sources
from multibackup.server.api.context import ServerContext
from multibackup.server.db import Database
from multibackup.server.executor import LocalExecutor
from multibackup.server.keyring import Keyring
from multibackup.server.logs import RequestTimer, log
from multibackup.server.metrics import Metrics
from multibackup.server.scheduler import Scheduler
from multibackup.server.settings import ServerSettings
from multibackup.server.web.pages import mount_static
from multibackup.server.web.pages import router as pages

ADMIN_EMAIL_ENV = "MULTIBACKUP_ADMIN_EMAIL"
ADMIN_PASSWORD_ENV = "MULTIBACKUP_ADMIN_PASSWORD"
API = "/api/v1"


def ensure_admin(db: Database, announce: Callable[[str], None]) -> None:
    """On the very first start, an organisation and its administrator.

    The password is taken from $MULTIBACKUP_ADMIN_PASSWORD, or made up and announced once
    (it is not stored anywhere but as its argon2 hash).
    """
    with db.session() as s:
        if s.scalar(select(func.count(m.User.id))):
            return
        email = os.environ.get(ADMIN_EMAIL_ENV, "admin@localhost").strip().lower()
        password = os.environ.get(ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(15)
        org = m.Organisation(name="default")
        s.add(org)
        s.flush()
        s.add(m.User(organisation_id=org.id, email=email, name="Administrator", role="admin",
                     superadmin=True, password_hash=auth.hash_password(password)))
    if os.environ.get(ADMIN_PASSWORD_ENV):
        announce(f"created the administrator {email} with the password from "
                 f"${ADMIN_PASSWORD_ENV}")
    else:
        announce(f"created the administrator {email} with password {password} "
                 "(shown only this once: sign in and keep it safe)")


def create_app(settings: ServerSettings, *, background: bool = True,
               announce: Callable[[str], None] = print) -> FastAPI:
    """The app for these settings; ``background`` starts the scheduler with the app."""
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    db = Database(settings.database())
    db.upgrade()
    keyring = Keyring.load(settings.key_file)
    ensure_admin(db, announce)
    metrics = Metrics()
    executor = LocalExecutor(db, keyring, settings, metrics)
    scheduler = Scheduler(db, executor, settings)
    context = ServerContext(settings, db, keyring, executor, scheduler, metrics,
                            auth.LoginThrottle())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if background:
            scheduler.start()
        log().info("server started", extra={"database": db.describe(),
                                            "listen": f"{settings.host}:{settings.port}"})
        try:
            yield
        finally:
            if background:
                scheduler.stop()
            executor.shutdown(wait=False)
            context.repositories.close()
            db.close()

    app = FastAPI(title="multibackup", version=__version__, lifespan=lifespan,
                  openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None,
                  description="Backups to several clouds at once: plans, runs, snapshots, "
                              "destinations, migrations and alerts.")
    app.state.ctx = context
    problems.install(app)
    for router in (accounts.router, destinations, sources, plans.router, runs.router,
                   snapshots.router, migrations.router, alerts.router, overview.router):
        app.include_router(router, prefix=API)

    @app.middleware("http")
    async def access_log(request: Request, call_next: Any) -> Response:
        timer = RequestTimer()
        response = await call_next(request)
        log().info("request", extra={"method": request.method, "path": request.url.path,
                                     "status": response.status_code, "ms": timer.ms()})
        return response

    @app.get("/healthz", tags=["server"])
    def healthz() -> dict[str, str]:
        with db.session() as s:
            s.execute(select(1))
        return {"status": "ok"}

    @app.get("/metrics", tags=["server"], include_in_schema=False)
    def prometheus() -> Response:
        _refresh_gauges(context)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.include_router(pages)
    mount_static(app)
    return app


def _refresh_gauges(c: ServerContext) -> None:
    c.executor.update_gauges()
    with c.db.session() as s:
        orgs = {o.id: o.name for o in s.scalars(select(m.Organisation))}
        for d in s.scalars(select(m.Destination)):
            c.metrics.set_destination(
                orgs.get(d.organisation_id, "?"), d.name, d.stored_bytes or 0,
                d.last_success.timestamp() if d.last_success else None, d.lagging)
