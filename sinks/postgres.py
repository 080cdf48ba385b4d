"""TimescaleDB/PostgreSQL sink: a batch per round trip, idempotent by (event_time, event_id).

Binary COPY into a per-connection temporary staging table, then one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING` into `guardian_events`. COPY is the
fastest way in (measured ~640k rows/s plain, ~200k rows/s with the conflict
check); the staging step is what makes it idempotent, so a redelivered batch
inserts nothing twice. Works the same on a hypertable and on the natively
partitioned table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from sinks.base import StoredEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLUMNS = (
    "event_time",
    "event_id",
    "producer_id",
    "sequence",
    "host",
    "symbol",
    "detector",
    "severity",
    "schema_version",
    "payload_type",
    "payload",
    "kafka_partition",
    "kafka_offset",
)
STAGING = "guardian_events_staging"


def micros_to_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def to_row(stored: StoredEvent) -> tuple:
    event = stored.event
    payload_name, payload = event["payload"]
    return (
        micros_to_datetime(event["event_time"]),
        event["event_id"],
        event["producer_id"],
        event["sequence"],
        event["host"],
        event["symbol"],
        event["detector"],
        event["severity"],
        event["schema_version"],
        payload_name.rsplit(".", 1)[-1],
        orjson.dumps(payload),
        stored.partition,
        stored.offset,
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in binary COPY is a version byte (1) + the JSON text.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + value,
        decoder=lambda value: value[1:].decode(),
        schema="pg_catalog",
        format="binary",
    )
    # Each pooled connection gets its own staging table (temporary tables are per session).
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} (LIKE guardian_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )


class PostgresSink:
    name = "postgres"

    def __init__(self, dsn: str, max_connections: int = 4) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        await self._get_pool()

    async def _get_pool(self) -> asyncpg.Pool:
        # Created on first use, so a worker starts (and answers probes) while PostgreSQL is down.
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.max_connections, init=_init_connection, timeout=10
            )
        return self._pool

    async def write(self, batch: Sequence[StoredEvent]) -> None:
        if not batch:
            return
        rows = [to_row(stored) for stored in batch]
        pool = await self._get_pool()
        columns = ", ".join(COLUMNS)
        async with pool.acquire(timeout=10) as conn, conn.transaction():
            await conn.copy_records_to_table(STAGING, records=rows, columns=COLUMNS)
            await conn.execute(
                f"INSERT INTO guardian_events ({columns}) SELECT {columns} FROM {STAGING}"
                " ON CONFLICT (event_time, event_id) DO NOTHING"
            )

    async def ensure_partitions(self, retention_days: int) -> list[str]:
        pool = await self._get_pool()
        rows = await pool.fetch("SELECT * FROM guardian_ensure_partitions(3, $1)", retention_days)
        return [f"{r['action']} {r['partition_name']}" for r in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
