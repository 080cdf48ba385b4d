"""`/v1/events`: history from PostgreSQL, newest first, a keyset cursor on (event_time, event_id)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from guardian.api import pages
from guardian.api.auth import Viewer
from guardian.api.models import Event

router = APIRouter(tags=["events"])
COLUMNS = (
    "event_id, event_time, producer_id, sequence, host, symbol, detector, severity, payload_type, payload::text,"
    " kafka_partition, kafka_offset, ingested_at"
)


@router.get("/v1/events", response_model=pages.Page[Event])
async def events(
    request: Request,
    _: Viewer,
    symbol: str | None = None,
    detector: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> pages.Page[Event]:
    after = pages.decode(cursor, 2)
    rows = await request.app.state.pool.fetch(
        f"SELECT {COLUMNS} FROM guardian_events WHERE ($1::text IS NULL OR symbol = $1)"
        " AND ($2::text IS NULL OR detector = $2) AND ($3::timestamptz IS NULL OR event_time >= $3)"
        " AND ($4::timestamptz IS NULL OR event_time < $4)"
        " AND ($5::timestamptz IS NULL OR (event_time, event_id) < ($5, $6::uuid))"
        " ORDER BY event_time DESC, event_id DESC LIMIT $7",
        symbol, detector, since, until,
        datetime.fromisoformat(after[0]) if after else None, after[1] if after else None,
        limit + 1,
    )  # fmt: skip
    return pages.page([Event.from_row(r) for r in rows], limit, lambda e: (e.event_time.isoformat(), e.event_id))
