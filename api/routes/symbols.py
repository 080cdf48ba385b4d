"""`/v1/symbols/{symbol}/...`: one symbol's story, from PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from guardian.api.auth import Viewer
from guardian.api.models import Breaker, Event
from guardian.api.routes.events import COLUMNS
from guardian.schemas.events import Detector

router = APIRouter(tags=["symbols"])
WINDOW = timedelta(hours=24)

# The newest row per detector that the hot view could have shown at $2: event time at or before it and
# already stored by then (a row replayed later was not on screen). Newest = latest event time, then
# highest sequence, the rule the hot view and the verifier use. One index probe per detector.
AS_OF_LATEST = f"""
SELECT e.* FROM unnest($3::text[]) AS d(detector) CROSS JOIN LATERAL (
    SELECT {COLUMNS} FROM guardian_events
    WHERE symbol = $1 AND detector = d.detector AND event_time <= $2 AND ingested_at <= $2
    ORDER BY event_time DESC, sequence DESC LIMIT 1) e
"""
AS_OF_DRIFT = f"""
SELECT DISTINCT ON (payload->>'metric') {COLUMNS} FROM guardian_events
WHERE symbol = $1 AND detector = '{Detector.DRIFT}' AND ingested_at <= $2
  AND event_time <= $2 AND event_time > $2::timestamptz - interval '24 hours'
ORDER BY payload->>'metric', event_time DESC, sequence DESC
"""
WINDOW_COUNT = (
    "SELECT count(*) FROM guardian_events WHERE symbol = $1 AND event_time > $2::timestamptz - $3::interval"
    " AND event_time <= $2 AND ingested_at <= $2"
)


class AsOf(BaseModel):
    symbol: str
    at: datetime
    latest: dict[str, Event] = Field(description="Newest event per detector the hot view could show then.")
    breaker: Breaker | None
    drift: dict[str, Event] = Field(description="Newest drift event per metric within the 24 h before `at`.")
    events_24h: int = Field(description="Events of the symbol in the 24 h up to `at`.")


@router.get("/v1/symbols/{symbol}/as-of", response_model=AsOf)
async def as_of(request: Request, symbol: str, at: datetime, _: Viewer) -> AsOf:
    """What the hot view showed for `symbol` at time `at`, rebuilt from the stored history."""
    pool = request.app.state.pool
    async with pool.acquire() as conn:
        latest = [Event.from_row(r) for r in await conn.fetch(AS_OF_LATEST, symbol, at, [d.value for d in Detector])]
        drift = [Event.from_row(r) for r in await conn.fetch(AS_OF_DRIFT, symbol, at)]
        count = await conn.fetchval(WINDOW_COUNT, symbol, at, WINDOW)
    breaker_event = next((e for e in latest if e.detector == Detector.CIRCUIT_BREAKER), None)
    breaker = None
    if breaker_event is not None:
        payload = breaker_event.payload
        breaker = Breaker(
            symbol=symbol, state=str(payload.get("to_state")), since=breaker_event.event_time,
            reason=payload.get("reason"), trip_count=payload.get("trip_count"), event=breaker_event,
        )  # fmt: skip
    return AsOf(symbol=symbol, at=at, latest={e.detector: e for e in latest}, breaker=breaker,
                drift={str(e.payload.get("metric")): e for e in drift}, events_24h=count)  # fmt: skip
