"""Alert channels: where failures (and optionally successes and a daily summary) are sent.

A channel is an Apprise URL (mailto://, json://, slack://, ...). URLs often carry a
password or token, so they are sealed like any credential and shown masked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from multibackup.server import alerts as notify
from multibackup.server import models as m
from multibackup.server import service
from multibackup.server.api.context import Id, Principal, ctx, principal, session
from multibackup.server.api.owned import refuse_taken
from multibackup.server.api.problems import Problem, not_found

router = APIRouter(tags=["alerts"])


class AlertBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    url: str | None = Field(default=None, max_length=4000)  # omitted on update: kept
    on_failure: bool = True
    on_success: bool = False
    daily_summary: bool = False


def alert_json(row: m.AlertChannel) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "url": row.url_masked,
            "on_failure": row.on_failure, "on_success": row.on_success,
            "daily_summary": row.daily_summary,
            "last_sent_at": row.last_sent_at.isoformat() if row.last_sent_at else None,
            "last_error": row.last_error}


def _get(s: Any, who: Principal, item_id: int) -> m.AlertChannel:
    row = s.get(m.AlertChannel, item_id)
    if row is None or row.organisation_id != who.organisation_id:
        raise not_found("alert channel")
    return row


def _set_url(row: m.AlertChannel, request: Request, url: str) -> None:
    url = url.strip()
    if "://" not in url:
        raise Problem(422, "url: expected an Apprise URL such as mailto://... or json://...",
                      field="url")
    row.url_sealed = ctx(request).keyring.seal({"url": url})
    row.url_masked = notify.mask_url(url)


@router.get("/alerts")
def list_alerts(request: Request, who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    with session(request) as s:
        rows = s.scalars(select(m.AlertChannel).where(
            m.AlertChannel.organisation_id == who.organisation_id).order_by(m.AlertChannel.name))
        return [alert_json(r) for r in rows]


@router.post("/alerts", status_code=201)
def create_alert(body: AlertBody, request: Request,
                 who: Principal = Depends(principal)) -> dict[str, Any]:
    name = service.check_name(body.name, "alert channel")
    if not body.url:
        raise Problem(422, "url: required", field="url")
    with session(request) as s:
        refuse_taken(s, m.AlertChannel, who, name, "alert channel")
        row = m.AlertChannel(organisation_id=who.organisation_id, name=name,
                             on_failure=body.on_failure, on_success=body.on_success,
                             daily_summary=body.daily_summary)
        _set_url(row, request, body.url)
        s.add(row)
        s.flush()
        return alert_json(row)


@router.put("/alerts/{item_id}")
def update_alert(item_id: Id, body: AlertBody, request: Request,
                 who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        row = _get(s, who, item_id)
        name = service.check_name(body.name, "alert channel")
        refuse_taken(s, m.AlertChannel, who, name, "alert channel", row)
        row.name = name
        row.on_failure, row.on_success = body.on_failure, body.on_success
        row.daily_summary = body.daily_summary
        if body.url:
            _set_url(row, request, body.url)
        s.flush()
        return alert_json(row)


@router.delete("/alerts/{item_id}", status_code=204)
def delete_alert(item_id: Id, request: Request, who: Principal = Depends(principal)) -> Response:
    with session(request) as s:
        s.delete(_get(s, who, item_id))
    return Response(status_code=204)


@router.post("/alerts/{item_id}/test")
def test_alert(item_id: Id, request: Request,
               who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        row = _get(s, who, item_id)
        url = ctx(request).keyring.open(row.url_sealed)["url"]
        name = row.name
    result = notify.send([url], "multibackup: test alert",
                         f"This is a test of the alert channel {name!r}.")[0]
    return {"ok": result["ok"], "error": result.get("error")}
