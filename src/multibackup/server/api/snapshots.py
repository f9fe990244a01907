"""Snapshots, read live from a plan's repository: list, browse, download, restore.

Reading opens the plan's repository with the settings as saved now; the restore itself is a
queued run like a backup, so it shows in the history with its own log.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from multibackup.config.model import Config
from multibackup.engine.source_restore import find_node, iter_content
from multibackup.plans.runner import plan_repository
from multibackup.repository.cache import default_cache_dir
from multibackup.repository.repository import Repository
from multibackup.repository.tree import DIR, FILE, SYMLINK
from multibackup.server import models as m
from multibackup.server import service
from multibackup.server.api.confine import check_path
from multibackup.server.api.context import Id, Principal, ServerContext, ctx, principal, session
from multibackup.server.api.plans import get_plan
from multibackup.server.api.problems import Problem
from multibackup.sources.url import is_url

router = APIRouter(tags=["snapshots"])
_KINDS = {DIR: "dir", FILE: "file", SYMLINK: "symlink"}


class RestoreBody(BaseModel):
    paths: list[str] = []
    target: str = Field(min_length=1, max_length=4000)  # a path, a URL or a saved source
    overwrite: bool = False


@contextmanager
def _repository(c: ServerContext, who: Principal, plan_id: int,
                index: bool = False) -> Iterator[Repository]:
    """The plan's repository from the cache (opened with the settings as saved now)."""
    config, name, fingerprint = _plan_config(c, who, plan_id)

    def opener(stack: ExitStack) -> Repository:
        return stack.enter_context(plan_repository(config, name, default_cache_dir()))

    with c.repositories.borrow(plan_id, fingerprint, opener, index=index) as repo:
        yield repo


def _plan_config(c: ServerContext, who: Principal, plan_id: int) -> tuple[Config, str, str]:
    """The caller's plan as a Config (secrets unsealed), its name, and the fingerprint of
    its saved settings."""
    with c.db.session() as s:
        plan = get_plan(s, who, plan_id)
        config = service.build_config(s, c.keyring, who.organisation_id, plan=plan)
        return config, plan.name, _fingerprint(s, plan)


def _fingerprint(s: Any, plan: m.Plan) -> str:
    """Changes whenever the plan's or its destinations' saved settings change."""
    parts: list[Any] = [plan.config, plan.secrets, plan.updated_at]
    names = (plan.config or {}).get("destinations") or []
    for dest in s.scalars(select(m.Destination).where(
            m.Destination.organisation_id == plan.organisation_id,
            m.Destination.name.in_(names)).order_by(m.Destination.name)):
        parts += [dest.name, dest.config, dest.secrets, dest.updated_at]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def snapshot_json(snap: Any) -> dict[str, Any]:
    return {"id": snap.id, "short_id": snap.short_id, "time": snap.time.isoformat(),
            "hostname": snap.hostname, "paths": snap.paths, "tags": snap.tags,
            "source": snap.paths[0] if len(snap.paths) == 1 else None,
            "summary": snap.summary}


@router.get("/plans/{plan_id}/snapshots")
def list_snapshots(plan_id: Id, request: Request,
                   who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    with _repository(ctx(request), who, plan_id) as repo:
        return [snapshot_json(s) for s in reversed(repo.snapshots())]


def _clean(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise Problem(422, "path: '.' and '..' are not allowed", field="path")
    return "/" + "/".join(parts)


@router.get("/plans/{plan_id}/snapshots/{snapshot_id}/tree")
def browse(plan_id: Id, snapshot_id: str, request: Request, path: str = "/",
           who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    path = _clean(path)
    with _repository(ctx(request), who, plan_id, index=True) as repo:
        snap = repo.find_snapshot(snapshot_id)
        node = find_node(repo, snap, path)
        if node.type != DIR or node.subtree is None:
            raise Problem(422, f"{path!r} is not a folder in snapshot {snap.short_id}",
                          field="path")
        base = path.rstrip("/")
        return [{"name": n.name, "path": f"{base}/{n.name}", "type": _KINDS.get(n.type, n.type),
                 "size": n.size if n.type == FILE else None, "mtime": n.mtime / 1e9,
                 "target": n.target or None}
                for n in sorted(repo.load_tree(node.subtree),
                                key=lambda n: (n.type != DIR, n.name))]


@router.get("/plans/{plan_id}/snapshots/{snapshot_id}/download")
def download(plan_id: Id, snapshot_id: str, path: str, request: Request,
             who: Principal = Depends(principal)) -> StreamingResponse:
    path = _clean(path)
    c = ctx(request)
    config, name, _ = _plan_config(c, who, plan_id)
    stack = ExitStack()  # its own repository, not the cache's: a long download holds it
    try:
        repo = stack.enter_context(plan_repository(config, name, default_cache_dir()))
        repo.load_index(recover=False)
        snap = repo.find_snapshot(snapshot_id)
        node = find_node(repo, snap, path)
        if node.type != FILE:
            raise Problem(422, f"{path!r} is not a file in snapshot {snap.short_id}",
                          field="path")
    except BaseException:
        stack.close()
        raise

    def body() -> Iterator[bytes]:
        with stack, ThreadPoolExecutor(4, thread_name_prefix="download") as pool:
            yield from iter_content(repo, node, pool)

    filename = path.rsplit("/", 1)[-1] or "file"
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
               "Content-Length": str(node.size)}
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


@router.post("/plans/{plan_id}/snapshots/{snapshot_id}/restore", status_code=202)
def restore(plan_id: Id, snapshot_id: str, body: RestoreBody, request: Request,
            who: Principal = Depends(principal)) -> dict[str, Any]:
    from multibackup.server.queue import enqueue_run, run_json

    if not who.admin:
        raise Problem(403, "only an organisation admin may restore onto the server or a host")
    target = body.target.strip()
    c = ctx(request)
    saved = None
    with c.db.session() as s:
        source = s.scalar(select(m.Source).where(m.Source.organisation_id == who.organisation_id,
                                                 m.Source.name == target))
        if source is not None:  # a saved source: its URL, with its sealed credentials
            saved, target = source.name, str(source.config.get("url", ""))
    if not is_url(target):
        if not os.path.isabs(target):
            raise Problem(422, "target: give an absolute path on the server, a URL or the "
                               "name of a saved source", field="target")
        check_path(c, who, target, "target")
    elif _has_password(target):  # run parameters are stored: no secret may ride in them
        raise Problem(422, "target: a password must not be written in the URL: save the "
                           "target as a source with its password and give its name",
                      field="target")
    paths = [_clean(p) for p in body.paths]
    with _repository(c, who, plan_id) as repo:
        snap = repo.find_snapshot(snapshot_id)
    with session(request) as s:
        plan = get_plan(s, who, plan_id)
        run = enqueue_run(s, kind="restore", organisation_id=who.organisation_id, plan=plan,
                          trigger="manual", params={"snapshot": snap.id, "paths": paths,
                                                    "target": target,
                                                    "target_source": saved,
                                                    "overwrite": body.overwrite})
        s.flush()
        out = run_json(run)
    c.executor.submit(out["id"])
    return out
