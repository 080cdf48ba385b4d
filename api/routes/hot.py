"""`/v1/hot/*`: the Redis hot view, what operators look at first (sinks/redis_hot_view.py's keys)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from guardian.api import pages
from guardian.api.auth import Viewer
from guardian.api.models import Breaker, Event, from_micros

router = APIRouter(tags=["hot view"])
LATEST, BREAKER, RECENT, DRIFT = "guardian:latest:", "guardian:breaker:", "guardian:recent:", "guardian:drift:"


def glob_literal(text: str) -> str:
    """`text` matched literally inside a Redis SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


async def scan(redis, pattern: str) -> list[bytes]:
    return sorted({key async for key in redis.scan_iter(match=pattern, count=1000)})


async def breakers(redis) -> list[Breaker]:
    keys = await scan(redis, BREAKER + "*")
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = await pipe.execute()
    board = []
    for key, fields in zip(keys, hashes, strict=True):
        if b"state" not in fields:
            continue
        event = Event.from_document(fields[b"event"]) if fields.get(b"event") else None
        board.append(Breaker(
            symbol=key.decode().removeprefix(BREAKER), state=fields[b"state"].decode(),
            since=from_micros(int(fields[b"event_time"])),
            reason=event.payload.get("reason") if event else None,
            trip_count=event.payload.get("trip_count") if event else None, event=event,
        ))  # fmt: skip
    return board


@router.get("/v1/hot/latest", response_model=list[Event])
async def latest(request: Request, _: Viewer, symbol: str | None = None, detector: str | None = None) -> list[Event]:
    """The newest event per symbol and detector (filters optional)."""
    redis = request.app.state.redis
    pattern = f"{LATEST}{glob_literal(symbol) if symbol else '*'}:{glob_literal(detector) if detector else '*'}"
    keys = await scan(redis, pattern)
    values = await redis.mget(keys) if keys else []
    return [Event.from_document(v) for v in values if v is not None]


@router.get("/v1/hot/breakers", response_model=list[Breaker])
async def breaker_board(request: Request, _: Viewer) -> list[Breaker]:
    """Every symbol's circuit breaker: state, since when, why."""
    return await breakers(request.app.state.redis)


@router.get("/v1/symbols", response_model=list[str])
async def symbols(request: Request, _: Viewer) -> list[str]:
    """Symbols the hot view holds events for (its 24 h windows)."""
    keys = await scan(request.app.state.redis, RECENT + "*")
    return [k.decode().removeprefix(RECENT) for k in keys]


@router.get("/v1/hot/recent/{symbol}", response_model=pages.Page[Event])
async def recent(
    request: Request,
    symbol: str,
    _: Viewer,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> pages.Page[Event]:
    """The symbol's last 24 h from the hot view, newest first. The cursor is (score, events already
    returned at that score), so events sharing a microsecond are neither skipped nor repeated."""
    after = pages.decode(cursor, 2)
    top, skip = (int(after[0]), int(after[1])) if after else ("+inf", 0)
    bottom = int(since.timestamp() * 1_000_000) if since else "-inf"
    rows = await request.app.state.redis.zrevrangebyscore(
        RECENT + symbol, top, bottom, start=skip, num=limit + 1, withscores=True
    )
    if not rows and after is None and not await request.app.state.redis.exists(RECENT + symbol):
        raise HTTPException(404, f"the hot view has no events of {symbol!r} in its window")
    shown = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = int(shown[-1][1])
        same = sum(1 for _, score in shown if int(score) == last) + (skip if last == top else 0)
        next_cursor = pages.encode((last, same))
    return pages.Page[Event](items=[Event.from_document(member) for member, _ in shown], next_cursor=next_cursor)
