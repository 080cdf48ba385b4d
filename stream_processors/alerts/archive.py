"""The alert archive: every record of guardian.alerts.v1 into guardian_alert_changes, in the worker fleet.

Its own consumer group (`<GUARDIAN_WORKER_GROUP>-alerts-archive`), apart from ingest: it never holds
up events, and every worker joins it, so Kafka spreads the alerts topic's partitions over the fleet.
It starts at the earliest offset, so the first start archives the topic's whole retention.

A batch is inserted in one statement (ON CONFLICT DO NOTHING on the change's key, so a republished or
re-read record inserts nothing) and its offsets are committed only after the insert. PostgreSQL away:
the same batch is retried with backoff and nothing is committed; a restart re-reads from the last commit.
"""

from __future__ import annotations

import asyncio

import asyncpg

from guardian.kafka_config import client_config
from guardian.logs import get_logger
from guardian.schemas.codec import EventCodec, load_alert_schema
from guardian.settings import Settings
from guardian.sinks.alert_history import change_row, insert_changes
from guardian.sinks.postgres import PostgresSink
from guardian.stream_processors import metrics
from guardian.stream_processors.alerts.outputs import ALERTS_SUBJECT
from guardian.stream_processors.batch_source import BatchSource

log = get_logger(__name__)

BATCH_MAX = 500
WAIT_S = 1.0
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 10.0


def archive_group(settings: Settings) -> str:
    return f"{settings.worker_group}-alerts-archive"


class AlertArchive:
    def __init__(self, settings: Settings, source: BatchSource | None = None) -> None:
        self.dsn = settings.postgres_dsn
        self.source = source or BatchSource(
            client_config(settings), archive_group(settings), settings.alerts_topic,
            session_timeout_ms=settings.worker_session_timeout_ms,
            heartbeat_interval_ms=settings.worker_heartbeat_interval_ms,
        )  # fmt: skip
        self.codec = EventCodec(load_alert_schema(), registry_url=settings.schema_registry_url, subject=ALERTS_SUBJECT)
        self.stopping = False
        self._pool: asyncpg.Pool | None = None
        self._stopped = asyncio.Event()

    def rows(self, batch: list) -> list[tuple]:
        """The change rows of a batch; a record that is no AlertEvent is skipped (counted, logged)."""
        rows = []
        for message in batch:
            try:
                rows.append(change_row(self.codec.decode(message.value()), message.partition(), message.offset()))
            except Exception as exc:  # a stray producer on the topic: archiving the rest matters more
                metrics.ARCHIVE_ERRORS.labels("decode").inc()
                log.error("alert record not archived: it does not decode", partition=message.partition(),
                          offset=message.offset(), error=repr(exc))  # fmt: skip
        return rows

    async def _pool_ready(self) -> asyncpg.Pool:
        if self._pool is None:  # on first use: a worker starts while PostgreSQL is down
            self._pool = await asyncpg.create_pool(self.dsn, min_size=0, max_size=1, timeout=10)
        return self._pool

    async def store(self, rows: list[tuple]) -> bool:
        """Insert until PostgreSQL takes the rows (True), or the archive stops (False: not committed)."""
        delay = RETRY_FIRST_S
        while True:
            try:
                new = await insert_changes(await self._pool_ready(), rows)
                metrics.ARCHIVE_ROWS.labels("archived").inc(new)
                metrics.ARCHIVE_ROWS.labels("duplicate").inc(len(rows) - new)
                return True
            except Exception as exc:
                metrics.ARCHIVE_ERRORS.labels("write").inc()
                if PostgresSink.is_permanent(exc):  # one bad row must not stop the archive: row by row
                    return await self._store_one_by_one(rows)
                if self.stopping:
                    return False
                log.warning("alert changes not archived yet; retrying", rows=len(rows), error=repr(exc), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _store_one_by_one(self, rows: list[tuple]) -> bool:
        for row in rows:
            try:
                new = await insert_changes(await self._pool_ready(), [row])
                metrics.ARCHIVE_ROWS.labels("archived" if new else "duplicate").inc()
            except Exception as exc:
                if not PostgresSink.is_permanent(exc):
                    if not await self.store([row]):  # retried; False only when stopping
                        return False
                    continue
                metrics.ARCHIVE_ROWS.labels("refused").inc()
                log.error("alert change refused by PostgreSQL; skipped", partition=row[-2], offset=row[-1],
                          error=repr(exc))  # fmt: skip
        return True

    async def run(self) -> None:
        """Archive until stop() is called."""
        try:
            while not self.stopping:
                batch = await self.source.next_batch(BATCH_MAX, WAIT_S)
                if not batch:
                    self.source.commit_due()
                    continue
                rows = self.rows(batch)
                if not rows or await self.store(rows):
                    self.source.commit(batch)
        finally:
            self._stopped.set()

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Let the loop finish its step (an insert being retried is abandoned, uncommitted), commit what is
        archived, leave the group."""
        self.stopping = True
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout_s)
        except TimeoutError:
            log.warning("alert archive did not stop in time", waited_s=timeout_s)
        await self.source.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
