"""The PostgreSQL sink against a real PostgreSQL: both ways in store the same rows, idempotently."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

import asyncpg
import pytest

from guardian.schemas.events import StoredEvent
from guardian.settings import Settings
from guardian.sinks.base import write_isolating
from guardian.sinks.postgres import UNNEST_MAX_ROWS, PostgresSink, micros_to_datetime


def spike(producer: str, sequence: int, at_us: int) -> StoredEvent:
    event = {
        "event_id": str(uuid.uuid4()), "producer_id": producer, "sequence": sequence, "host": "h",
        "symbol": "PGSINK", "detector": "LATENCY_SPIKE_DETECTOR", "event_time": at_us, "severity": "WARNING",
        "schema_version": 1,
        "payload": ("io.guardian.events.LatencySpike", {
            "observed_latency_us": 9000 + sequence, "threshold_us": 1000, "p50_us": 300, "p99_us": 800,
            "p999_us": 1500, "window_seconds": 60, "z_score": 4.5, "order_path": "new_order", "venue": "XNAS"}),
    }  # fmt: skip
    return StoredEvent(event, partition=3, offset=sequence)


@pytest.mark.parametrize("size", [10, UNNEST_MAX_ROWS + 100], ids=["unnest", "copy"])
def test_a_batch_is_stored_once_with_typed_columns(settings: Settings, size: int):
    producer = f"pgsink-{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    batch = [spike(producer, sequence, now_us + sequence) for sequence in range(size)]

    async def run() -> list[asyncpg.Record]:
        sink = PostgresSink(settings.postgres_dsn)
        try:
            await sink.write(batch)
            await sink.write(batch)  # redelivered: nothing twice
            await sink.write(batch[: size // 2])  # and a part of it again, alone
            conn = await asyncpg.connect(settings.postgres_admin_dsn)  # the DELETE below is the owner's
            try:
                rows = await conn.fetch(
                    "SELECT event_time, event_id::text, sequence, payload_type, payload::text, kafka_partition,"
                    " kafka_offset FROM guardian_events WHERE producer_id = $1 ORDER BY sequence",
                    producer,
                )
                await conn.execute("DELETE FROM guardian_events WHERE producer_id = $1", producer)
                return rows
            finally:
                await conn.close()
        finally:
            await sink.close()

    rows = asyncio.run(run())
    assert len(rows) == size
    for row, stored in zip(rows, batch, strict=True):
        event = stored.event
        assert row["event_id"] == event["event_id"]
        assert row["event_time"] == micros_to_datetime(event["event_time"])
        assert row["payload_type"] == "LatencySpike"
        assert json.loads(row["payload"]) == event["payload"][1]
        assert (row["kafka_partition"], row["kafka_offset"]) == (3, event["sequence"])


@pytest.mark.parametrize("size", [200, UNNEST_MAX_ROWS + 500], ids=["unnest", "copy"])
def test_rows_postgresql_refuses_are_split_out_and_the_rest_is_stored(settings: Settings, size: int):
    """What the worker's rules would catch first, written past them: PostgreSQL's own refusals
    (a NUL in text, an incompressible symbol over the btree row limit) are permanent."""
    producer = f"pgpoison-{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    batch = [spike(producer, sequence, now_us + sequence) for sequence in range(size)]
    poison = {17: {"symbol": "NUL\x00"}, 101: {"symbol": secrets.token_urlsafe(9_000)}, size - 1: {"host": "h\x00"}}
    for index, change in poison.items():
        batch[index] = StoredEvent({**batch[index].event, **change}, partition=3, offset=index)
    refused: list[tuple[int, str]] = []

    async def run() -> int:
        sink = PostgresSink(settings.postgres_dsn)
        try:
            await write_isolating(sink, batch, lambda row, error: refused.append((row.offset, error.sink)))
            return await (await sink._get_pool()).fetchval(
                "SELECT count(*) FROM guardian_events WHERE producer_id = $1", producer
            )
        finally:
            await sink.close()

    stored = asyncio.run(run())
    assert sorted(refused) == [(index, "postgres") for index in sorted(poison)]
    assert stored == size - len(poison)
