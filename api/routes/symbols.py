"""`/v1/symbols/{symbol}/...`: one symbol's story, from PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from guardian.api import pages
from guardian.api.auth import Viewer
from guardian.api.models import Breaker, Event
from guardian.api.routes import hot
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
# The newest drift event per metric, one index probe each; the metrics are those the hot view knows
# for the symbol (its `guardian:drift:{symbol}` hash), else those of the symbol's drift rows in the 24 h.
AS_OF_DRIFT = f"""
SELECT e.* FROM unnest($3::text[]) AS m(metric) CROSS JOIN LATERAL (
    SELECT {COLUMNS} FROM guardian_events
    WHERE symbol = $1 AND detector = '{Detector.DRIFT}' AND payload->>'metric' = m.metric
      AND event_time <= $2 AND ingested_at <= $2
    ORDER BY event_time DESC, sequence DESC LIMIT 1) e
"""
DRIFT_METRICS = f"""
SELECT DISTINCT payload->>'metric' FROM guardian_events
WHERE symbol = $1 AND detector = '{Detector.DRIFT}'
  AND event_time <= $2 AND event_time > $2::timestamptz - interval '24 hours'
"""
# By event time (an index-only count); `latest` and `drift` above also leave out rows stored after `at`.
WINDOW_COUNT = (
    "SELECT count(*) FROM guardian_events WHERE symbol = $1 AND event_time > $2::timestamptz - $3::interval"
    " AND event_time <= $2"
)


class AsOf(BaseModel):
    symbol: str
    at: datetime
    latest: dict[str, Event] = Field(description="Newest event per detector the hot view could show then.")
    breaker: Breaker | None
    drift: dict[str, Event] = Field(description="Newest drift event per metric within the 24 h before `at`.")
    events_24h: int = Field(description="Events of the symbol whose event time is in the 24 h up to `at`.")


@router.get("/v1/symbols/{symbol}/as-of", response_model=AsOf)
async def as_of(request: Request, symbol: str, at: datetime, _: Viewer) -> AsOf:
    """What the hot view showed for `symbol` at time `at`, rebuilt from the stored history."""
    pool = request.app.state.pool
    metrics = [m.decode() for m in await request.app.state.redis.hkeys(f"{hot.DRIFT}{symbol}")]
    async with pool.acquire() as conn:
        latest = [Event.from_row(r) for r in await conn.fetch(AS_OF_LATEST, symbol, at, [d.value for d in Detector])]
        if not metrics:
            metrics = [r[0] for r in await conn.fetch(DRIFT_METRICS, symbol, at)]
        drift = [Event.from_row(r) for r in await conn.fetch(AS_OF_DRIFT, symbol, at, metrics)]
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


class TimelineItem(BaseModel):
    at: datetime
    kind: str = Field(description="event, alert (a state change) or notification (one delivery attempt)")
    id: str
    title: str
    detail: dict[str, Any]


# Each branch takes its own newest rows after the cursor (on its own index), then they are merged:
# (at, kind, id) descending is one total order over the three tables.
_AFTER = "($3::timestamptz IS NULL OR {at} < $3 OR ({at} = $3 AND ('{kind}' < $4 OR ('{kind}' = $4 AND {id} < $5))))"
_SPAN = "({at} >= $6 OR $6::timestamptz IS NULL) AND ({at} < $7 OR $7::timestamptz IS NULL)"


def _branch(select: str, table: str, at: str, kind: str, id_: str) -> str:
    where = f"symbol = $1 AND {_AFTER.format(at=at, kind=kind, id=id_)} AND {_SPAN.format(at=at)}"
    return f"(SELECT {select}, {id_} AS sort_id FROM {table} WHERE {where} ORDER BY {at} DESC, {id_} DESC LIMIT $2)"


BRANCHES = {
    "event": _branch(
        "event_time AS at, 'event' AS kind, event_id::text AS id, detector || ' · ' || severity AS title,"
        " payload AS detail", "guardian_events", "event_time", "event", "event_id::text",
    ),
    "alert": _branch(
        "at, 'alert' AS kind, id::text AS id,"
        " rule || ' ' || status || CASE WHEN silenced THEN ' (silenced)' ELSE '' END AS title,"
        " jsonb_build_object('severity', severity, 'summary', summary, 'fingerprint', fingerprint,"
        " 'trigger_event', event_id) AS detail", "guardian_alert_changes", "at", "alert", "lpad(id::text, 20, '0')",
    ),
    "notification": _branch(
        "at, 'notification' AS kind, id::text AS id, channel || ' → ' || receiver || ': ' || outcome AS title,"
        " jsonb_build_object('rule', rule, 'status', status, 'attempt', attempt, 'http_status', http_status,"
        " 'latency_s', latency_s, 'error', error) AS detail", "guardian_notifications", "at", "notification",
        "lpad(id::text, 20, '0')",
    ),
}  # fmt: skip


def timeline_sql(kinds: set[str]) -> str:
    """The chosen branches (names from BRANCHES only, never the caller's text) merged in one order."""
    chosen = [sql for kind, sql in BRANCHES.items() if kind in kinds]
    return f"SELECT * FROM ({' UNION ALL '.join(chosen)}) merged ORDER BY at DESC, kind DESC, sort_id DESC LIMIT $2"


@router.get("/v1/symbols/{symbol}/timeline", response_model=pages.Page[TimelineItem])
async def timeline(
    request: Request,
    symbol: str,
    _: Viewer,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    kind: Annotated[list[Literal["event", "alert", "notification"]] | None, Query()] = None,
) -> pages.Page[TimelineItem]:
    """The symbol's events, alert changes and notification attempts (all, or the kinds asked for),
    interleaved, newest first."""
    after = pages.decode(cursor, 3)
    at, at_kind, sort_id = (datetime.fromisoformat(after[0]), after[1], after[2]) if after else (None, None, None)
    sql = timeline_sql(set(kind or BRANCHES))
    rows = await request.app.state.pool.fetch(sql, symbol, limit + 1, at, at_kind, sort_id, since, until)
    items = [(TimelineItem(at=r["at"], kind=r["kind"], id=r["id"], title=r["title"], detail=orjson.loads(r["detail"])),
              r["sort_id"]) for r in rows]  # fmt: skip
    page = pages.page(items, limit, lambda pair: (pair[0].at.isoformat(), pair[0].kind, pair[1]))
    return pages.Page[TimelineItem](items=[item for item, _ in page.items], next_cursor=page.next_cursor)


class Series(BaseModel):
    """Per bin: its start in seconds since the epoch, then each metric (null where the bin had none)."""

    bin_s: int = Field(description="Width of a bin: a minute, or less when the history is younger than 4 h.")
    t: list[int]
    latency_us: list[float | None]
    p99_us: list[float | None]
    drift_score: list[float | None]


SERIES = f"""
SELECT extract(epoch FROM date_bin(make_interval(secs => $3), event_time, TIMESTAMPTZ 'epoch'))::bigint AS t,
       max((payload->>'observed_latency_us')::float8) FILTER (WHERE detector = '{Detector.LATENCY_SPIKE}') AS latency,
       max((payload->>'p99_us')::float8) FILTER (WHERE detector = '{Detector.LATENCY_SPIKE}') AS p99,
       max((payload->>'drift_score')::float8) FILTER (WHERE detector = '{Detector.DRIFT}') AS drift
FROM guardian_events WHERE symbol = $1 AND event_time > $2 GROUP BY 1 ORDER BY 1
"""
BINS = 240  # about one per 4 px of a chart


@router.get("/v1/symbols/{symbol}/series", response_model=Series)
async def series(request: Request, symbol: str, _: Viewer, since: datetime | None = None) -> Series:
    """The highest observed latency, the reported p99 and the highest drift score per bin, over the 24 h
    before now by default: what the symbol page charts. Bins are a minute wide, narrower (down to a
    second) when the symbol's history in the window is younger, so a new symbol still draws a line."""
    pool = request.app.state.pool
    start = since or datetime.now(UTC) - WINDOW
    first = await pool.fetchval("SELECT min(event_time) FROM guardian_events WHERE symbol = $1 AND event_time > $2",
                                symbol, start)  # fmt: skip
    span_s = (datetime.now(UTC) - first).total_seconds() if first else 0
    bin_s = int(max(1, min(60, span_s // BINS)))
    rows = await pool.fetch(SERIES, symbol, start, bin_s)
    return Series(bin_s=bin_s, t=[r["t"] for r in rows], latency_us=[r["latency"] for r in rows],
                  p99_us=[r["p99"] for r in rows], drift_score=[r["drift"] for r in rows])  # fmt: skip
