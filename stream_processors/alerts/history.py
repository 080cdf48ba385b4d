"""The notification log: every notification attempt as a row of guardian_notifications, written in the background.

`record()` never waits: it puts the row on a bounded in-memory queue, and a full queue drops the row
and counts it (guardian_worker_notification_rows{result="overflow"}), so a slow or absent PostgreSQL
never holds up alerts or ingest. `run()` flushes the queue in batches; a failed write is retried with
backoff while new rows queue up behind it (and overflow, counted, if the outage lasts).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from guardian.logs import get_logger
from guardian.sinks.alert_history import Attempt, insert_notifications
from guardian.sinks.postgres import PostgresSink
from guardian.stream_processors import metrics

log = get_logger(__name__)

MAX_QUEUED = 10_000  # rows: ~2 MB; hours of alerts at any realistic rate
BATCH_MAX = 500
FLUSH_EVERY_S = 0.2
RETRY_MAX_S = 5.0
OVERFLOW_LOG_EVERY_S = 10.0


class NotificationLog:
    def __init__(self, dsn: str, max_queued: int = MAX_QUEUED) -> None:
        self.dsn = dsn
        self.queue: asyncio.Queue[Attempt] = asyncio.Queue(max_queued)
        self._pool: asyncpg.Pool | None = None
        self._overflow_logged_at = 0.0
        self._stopping = False
        self._inflight: list[Attempt] = []  # the batch being written: close() writes it if run() was cancelled

    def record(self, attempt: Attempt) -> None:
        try:
            self.queue.put_nowait(attempt)
        except asyncio.QueueFull:
            metrics.NOTIFICATION_ROWS.labels("overflow").inc()
            if time.monotonic() - self._overflow_logged_at >= OVERFLOW_LOG_EVERY_S:
                self._overflow_logged_at = time.monotonic()
                log.warning("notification log full; attempt rows dropped", queued=self.queue.qsize())

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:  # on first use: a worker starts while PostgreSQL is down
            self._pool = await asyncpg.create_pool(self.dsn, min_size=0, max_size=1, timeout=10)
        return self._pool

    def _take(self) -> list[Attempt]:
        batch = []
        while len(batch) < BATCH_MAX and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def _write(self, batch: list[Attempt]) -> None:
        """Until PostgreSQL takes the batch or refuses its data (dropped, counted); retried while stopping
        only once."""
        delay = FLUSH_EVERY_S
        while True:
            try:
                written = await insert_notifications(await self._get_pool(), batch)
                metrics.NOTIFICATION_ROWS.labels("written").inc(written)
                metrics.NOTIFICATION_ROWS.labels("duplicate").inc(len(batch) - written)
                return
            except Exception as exc:
                if PostgresSink.is_permanent(exc):
                    metrics.NOTIFICATION_ROWS.labels("refused").inc(len(batch))
                    log.error("notification rows refused; dropped", rows=len(batch), error=repr(exc))
                    return
                metrics.NOTIFICATION_LOG_ERRORS.inc()
                if self._stopping:
                    log.warning("notification rows not written at shutdown", rows=len(batch), error=repr(exc))
                    return
                log.warning("notification rows not written yet; retrying", rows=len(batch), error=repr(exc),
                            in_s=delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def run(self) -> None:
        """Flush forever (a task of the worker); cancel it, then call close()."""
        while True:
            first = await self.queue.get()
            self._inflight = [first]
            await asyncio.sleep(FLUSH_EVERY_S)  # gather what comes with it: one insert per burst
            self._inflight += self._take()
            await self._write(self._inflight)
            self._inflight = []

    async def close(self) -> None:
        """Write what is queued (one try each batch), then close the pool."""
        self._stopping = True
        batch, self._inflight = self._inflight, []
        if batch:
            await self._write(batch)
        while batch := self._take():
            await self._write(batch)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
