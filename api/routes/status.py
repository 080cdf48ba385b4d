"""`/v1/status`: the platform at a glance — stores, lag per partition, consistency, recovery state.

Every probe has a short timeout and runs concurrently; Kafka's answer is cached for a few seconds
(the dashboard asks every second, the lag does not need more), so a store that hangs makes its own
line say so instead of stalling the page.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from guardian.api.auth import Viewer
from guardian.kafka_lookup import group_lag
from guardian.settings import Settings
from guardian.sinks.redis_hot_view import STATUS_KEY

router = APIRouter(tags=["status"])
PROBE_TIMEOUT_S = 2.0
KAFKA_CACHE_S = 5.0


class Store(BaseModel):
    up: bool
    detail: str = ""


class PartitionLag(BaseModel):
    partition: int
    committed: int | None = Field(description="The fleet's committed offset; null when it never committed.")
    end: int
    lag: int


class Check(BaseModel):
    """The newest audit row of an operation (a verification, a recovery)."""

    at: datetime
    actor: str
    ok: bool
    detail: dict[str, Any]


class Status(BaseModel):
    stores: dict[str, Store]
    lag: list[PartitionLag]
    total_lag: int | None
    hot_view: dict[str, str] = Field(description="The hot view's own state: ready/rebuilding, window, since.")
    storage_jobs: list[dict[str, Any]]
    last_verify: Check | None
    last_recovery: Check | None


class KafkaLag:
    """group_lag() off the event loop, at most once per KAFKA_CACHE_S."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._at = 0.0
        self._value: tuple[dict[int, tuple[int | None, int]] | None, str] = (None, "not asked yet")
        self._lock = asyncio.Lock()

    async def get(self) -> tuple[dict[int, tuple[int | None, int]] | None, str]:
        async with self._lock:
            if time.monotonic() - self._at > KAFKA_CACHE_S:
                try:
                    lag = await asyncio.wait_for(asyncio.to_thread(
                        group_lag, self.settings, self.settings.worker_group, self.settings.events_topic
                    ), timeout=PROBE_TIMEOUT_S * 3)  # fmt: skip
                    self._value = (lag, "")
                except Exception as exc:
                    self._value = (None, str(exc) or type(exc).__name__)
                self._at = time.monotonic()
            return self._value


# The audit actions whose newest row the status shows (sinks/migrations/0006 indexes them by action).
CHECKS = {"verify": ("verify", "verify --repair"), "recover": ("recover hot-view", "recover checkpoints --forget")}


async def _newest(conn, actions: tuple[str, ...]) -> Check | None:
    rows = [await conn.fetchrow("SELECT id, at, actor, status, detail FROM guardian_audit WHERE action = $1"
                                " ORDER BY id DESC LIMIT 1", action) for action in actions]  # fmt: skip
    newest = max((r for r in rows if r is not None), key=lambda r: r["id"], default=None)
    if newest is None:
        return None
    return Check(at=newest["at"], actor=newest["actor"], ok=newest["status"] == 0, detail=json.loads(newest["detail"]))


async def _postgres(pool) -> tuple[Store, list[dict[str, Any]], Check | None, Check | None]:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S), pool.acquire() as conn:
            jobs = await conn.fetch("SELECT * FROM guardian_storage_jobs ORDER BY job")
            checks = {kind: await _newest(conn, actions) for kind, actions in CHECKS.items()}
    except Exception as exc:
        return Store(up=False, detail=str(exc) or type(exc).__name__), [], None, None
    return Store(up=True), [dict(r) for r in jobs], checks["verify"], checks["recover"]


async def _redis(redis) -> tuple[Store, dict[str, str]]:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await redis.ping()
            view = await redis.hgetall(STATUS_KEY)
    except Exception as exc:
        return Store(up=False, detail=str(exc) or type(exc).__name__), {}
    return Store(up=True), {k.decode(): v.decode() for k, v in view.items()} or {"state": "missing"}


async def status_of(app) -> Status:
    (pg, jobs, verify, recovery), (redis, view), (lag, kafka_error) = await asyncio.gather(
        _postgres(app.state.pool), _redis(app.state.redis), app.state.kafka_lag.get()
    )
    rows = [
        PartitionLag(partition=p, committed=c, end=end, lag=end - (c or 0))
        for p, (c, end) in sorted((lag or {}).items())
    ]
    return Status(
        stores={"postgresql": pg, "redis": redis, "kafka": Store(up=lag is not None, detail=kafka_error)},
        lag=rows, total_lag=sum(r.lag for r in rows) if lag is not None else None, hot_view=view,
        storage_jobs=jobs, last_verify=verify, last_recovery=recovery,
    )  # fmt: skip


@router.get("/v1/status", response_model=Status)
async def status(request: Request, _: Viewer) -> Status:
    return await status_of(request.app)
