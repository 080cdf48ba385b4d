"""`/v1/alerts/*` and `/v1/silences`: what fires now, what fired (with the events behind it and the
notifications sent), and the silences operators make and end."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import click
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field, model_validator

from guardian.api import pages
from guardian.api.auth import Operator, Viewer
from guardian.api.models import Event, from_micros
from guardian.api.routes.events import COLUMNS
from guardian.cli_kit import parse_duration
from guardian.sinks import alert_history, alert_state, silences
from guardian.sinks.alert_history import Cursor

router = APIRouter(tags=["alerts"])
CONTEXT = timedelta(seconds=60)  # the symbol's events shown before an alert's trigger


class ActiveAlert(BaseModel):
    fingerprint: str
    rule: str
    severity: str
    status: str
    symbol: str | None
    labels: dict[str, str]
    summary: str
    starts_at: datetime
    event_id: str | None
    silenced: bool


class AlertChange(BaseModel):
    id: int
    at: datetime
    fingerprint: str
    rule: str
    severity: str
    status: str
    symbol: str | None
    labels: dict[str, Any]
    summary: str
    starts_at: datetime
    ends_at: datetime | None
    event_id: str | None
    event_time: datetime | None
    notified_at: datetime | None
    repeat: bool
    silenced: bool


class Notification(BaseModel):
    id: int
    at: datetime
    fingerprint: str
    symbol: str | None
    rule: str
    status: str
    channel: str
    receiver: str
    attempt: int
    outcome: str
    http_status: int | None
    error: str | None
    latency_s: float | None


class AlertStory(BaseModel):
    """One alert: its state now, every change, the events that triggered them (and the symbol's events in
    the minute before), and every notification attempt."""

    fingerprint: str
    active: ActiveAlert | None
    changes: list[AlertChange]
    triggers: list[Event]
    context: list[Event] = Field(description="The symbol's events in the 60 s before the newest trigger.")
    notifications: list[Notification]


def _cursor(cursor: str | None, id_type: type) -> Cursor | None:
    key = pages.decode(cursor, 2)
    return Cursor(datetime.fromisoformat(key[0]), id_type(key[1])) if key else None


def _next(page: alert_history.Page) -> str | None:
    return pages.encode((page.next_cursor.at.isoformat(), page.next_cursor.id)) if page.next_cursor else None


def _active(alert: dict) -> ActiveAlert:
    fields = {k: v for k, v in alert.items() if k in ActiveAlert.model_fields}
    return ActiveAlert(
        **fields | {"starts_at": from_micros(alert["starts_at"]), "silenced": bool(alert.get("silenced"))}
    )


@router.get("/v1/alerts/active", response_model=list[ActiveAlert])
async def active(request: Request, _: Viewer) -> list[ActiveAlert]:
    """Alerts firing now, P0 first, oldest first (silenced ones included, marked)."""
    return [_active(a) for a in await alert_state.active(request.app.state.redis)]


@router.get("/v1/alerts/history", response_model=pages.Page[AlertChange])
async def history(
    request: Request,
    _: Viewer,
    symbol: str | None = None,
    rule: str | None = None,
    fingerprint: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> pages.Page[AlertChange]:
    """Every alert state change, newest first."""
    page = await alert_history.alert_changes(
        request.app.state.pool, symbol=symbol, rule=rule, fingerprint=fingerprint, since=since, until=until,
        before=_cursor(cursor, int), limit=limit,
    )  # fmt: skip
    return pages.Page[AlertChange](items=[AlertChange(**i) for i in page.items], next_cursor=_next(page))


@router.get("/v1/alerts/{fingerprint}", response_model=AlertStory)
async def story(request: Request, fingerprint: str, _: Viewer) -> AlertStory:
    pool = request.app.state.pool
    changes = (await alert_history.alert_changes(pool, fingerprint=fingerprint, limit=100)).items
    current = next((a for a in await alert_state.active(request.app.state.redis) if a["fingerprint"] == fingerprint),
                   None)  # fmt: skip
    if not changes and current is None:
        raise HTTPException(404, f"no alert {fingerprint!r} in the history or firing now")
    keys = {(c["event_time"], c["event_id"]) for c in changes if c["event_id"] and c["event_time"]}
    triggers = [Event.from_row(r) for r in await pool.fetch(
        f"SELECT {COLUMNS} FROM guardian_events WHERE (event_time, event_id) IN"
        " (SELECT * FROM unnest($1::timestamptz[], $2::uuid[])) ORDER BY event_time DESC",
        [t for t, _ in keys], [i for _, i in keys],
    )]  # fmt: skip
    context: list[Event] = []
    if triggers:
        newest = triggers[0]
        context = [Event.from_row(r) for r in await pool.fetch(
            f"SELECT {COLUMNS} FROM guardian_events WHERE symbol = $1 AND event_time >= $2 AND event_time <= $3"
            " ORDER BY event_time DESC LIMIT 500", newest.symbol, newest.event_time - CONTEXT, newest.event_time,
        )]  # fmt: skip
    sent = (await alert_history.notifications(pool, fingerprint=fingerprint, limit=500)).items
    return AlertStory(fingerprint=fingerprint, active=_active(current) if current else None,
                      changes=[AlertChange(**c) for c in changes], triggers=triggers, context=context,
                      notifications=[Notification(**n) for n in sent])  # fmt: skip


class Silence(BaseModel):
    id: str
    matchers: dict[str, str]
    comment: str
    expires_at: datetime
    created_by: str | None
    starts_at: datetime | None = None


class SilenceHistory(Silence):
    expired_at: datetime | None
    expired_by: str | None


class NewSilence(BaseModel):
    matchers: dict[str, str] = Field(description="Label name -> value; an alert is muted when all match.")
    duration: str | None = Field(None, description="How long from now: 30m, 2h, 1d…")
    expires_at: datetime | None = None
    comment: str = ""

    @model_validator(mode="after")
    def one_end(self) -> NewSilence:
        if (self.duration is None) == (self.expires_at is None):
            raise ValueError("give a duration or expires_at (one of them)")
        return self


@router.get("/v1/silences", response_model=pages.Page[Silence])
async def active_silences(request: Request, _: Viewer) -> pages.Page[Silence]:
    """Silences in force now, soonest expiry first (all of them: one page)."""
    return pages.Page[Silence](items=[Silence(**s) for s in await silences.active(request.app.state.redis)])


@router.get("/v1/silences/history", response_model=pages.Page[SilenceHistory])
async def silence_history(
    request: Request,
    _: Viewer,
    since: datetime | None = None,
    created_by: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> pages.Page[SilenceHistory]:
    page = await silences.history(request.app.state.pool, since=since, created_by=created_by,
                                  before=_cursor(cursor, str), limit=limit)  # fmt: skip
    return pages.Page[SilenceHistory](items=[SilenceHistory(**i) for i in page.items], next_cursor=_next(page))


@router.post("/v1/silences", response_model=Silence, status_code=201)
async def create_silence(request: Request, body: NewSilence, operator: Operator) -> Silence:
    try:
        duration_s = parse_duration(body.duration) if body.duration else None
        made = await silences.create(request.app.state.redis, request.app.state.pool, body.matchers,
                                     created_by=operator.actor, duration_s=duration_s, expires_at=body.expires_at,
                                     comment=body.comment)  # fmt: skip
    except silences.SilenceNotApplied as exc:
        raise HTTPException(503, str(exc)) from None
    except (silences.SilenceError, click.BadParameter) as exc:
        raise HTTPException(422, exc.format_message() if isinstance(exc, click.ClickException) else str(exc)) from None
    return Silence(**made)


@router.delete("/v1/silences/{silence_id}", response_model=dict[str, str])
async def expire_silence(request: Request, silence_id: str, operator: Operator) -> dict[str, str]:
    if not await silences.expire(request.app.state.redis, request.app.state.pool, silence_id, operator.actor):
        raise HTTPException(404, f"no silence {silence_id!r} in force")
    return {"id": silence_id, "expired_by": operator.actor}
