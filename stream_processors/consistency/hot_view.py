"""PostgreSQL against the Redis hot view: each `latest` and `breaker` key holds the newest row for its key.

PostgreSQL is read first, Redis after it: ingestion goes on meanwhile, and the hot view only moves
forward, so a key may be newer than the row read (fine: in flight) but never older unless it is
stale. Newest means latest event time, then highest sequence (what restore() and the API call newest),
among the rows of the verified offsets (rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson
import redis.asyncio as redis

from guardian.schemas.events import Detector
from guardian.stream_processors.consistency import rows as window_rows
from guardian.stream_processors.consistency.rows import IN_RANGES

DOCUMENT = (
    "event_id::text, producer_id, sequence, host, symbol, detector,"
    " (extract(epoch FROM event_time) * 1000000)::bigint AS event_time, severity, schema_version, payload_type,"
    " payload::text"
)
NEWEST_LATEST = (
    IN_RANGES
    + f"""
SELECT DISTINCT ON (symbol, detector) {DOCUMENT} FROM windowed ORDER BY symbol, detector, event_time DESC, sequence DESC
"""
)
NEWEST_BREAKER = (
    IN_RANGES
    + f"""
SELECT DISTINCT ON (symbol) {DOCUMENT} FROM windowed WHERE detector = $6
ORDER BY symbol, event_time DESC, sequence DESC
"""
)
STALE, CORRUPT, ABSENT = "stale_key", "corrupt_key", "missing_key"


@dataclass
class KeyFinding:
    kind: str  # STALE, CORRUPT or ABSENT
    key: str
    field: str | None  # the hash field for a breaker key
    seen: bytes | None  # the value read (repair changes it only if it is still this)
    expected: dict  # the newest row, as the hot view stores it

    def describe(self) -> str:
        want = f"{self.expected['event_id']} (seq {self.expected['sequence']}, t {self.expected['event_time']})"
        if self.kind == ABSENT:
            return f"{self.key}: absent; PostgreSQL's newest is {want}"
        if self.kind == CORRUPT:
            return f"{self.key}: unreadable or not an event ({(self.seen or b'')[:60]!r}); newest is {want}"
        held = orjson.loads(self.seen or b"{}")
        return (f"{self.key}: holds {held.get('event_id')} (seq {held.get('sequence')}, t {held.get('event_time')}),"
                f" older than PostgreSQL's newest {want}")  # fmt: skip


def document(row: asyncpg.Record) -> dict:
    return {**dict(row), "payload": orjson.loads(row["payload"])}


def compare(key: str, field: str | None, seen: bytes | None, expected: dict) -> KeyFinding | None:
    if seen is None:
        return KeyFinding(ABSENT, key, field, seen, expected)
    try:
        held = orjson.loads(seen)
        # A UUID's hex digits may come in either case; PostgreSQL gives them lower case.
        held_time, held_sequence, held_id = int(held["event_time"]), int(held["sequence"]), held["event_id"].lower()
        same_producer = held["producer_id"] == expected["producer_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return KeyFinding(CORRUPT, key, field, seen, expected)
    if held_id == expected["event_id"]:
        return None if {**held, "event_id": held_id} == expected else KeyFinding(CORRUPT, key, field, seen, expected)
    newer = (held_sequence > expected["sequence"]) if same_producer else held_time >= expected["event_time"]
    return None if newer else KeyFinding(STALE, key, field, seen, expected)


async def check(conn: asyncpg.Connection, client: redis.Redis, ranges: dict[int, tuple[int, int]],
                rows_from: datetime, rows_to: datetime) -> tuple[int, list[KeyFinding]]:  # fmt: skip
    """(keys checked, findings)."""
    if not ranges:
        return 0, []
    window = window_rows.args(ranges, rows_from, rows_to)
    latest = await conn.fetch(NEWEST_LATEST, *window, timeout=300)
    breakers = await conn.fetch(NEWEST_BREAKER, *window, Detector.CIRCUIT_BREAKER.value, timeout=300)
    wanted: list[tuple[str, str | None, dict]] = [
        (f"guardian:latest:{r['symbol']}:{r['detector']}", None, document(r)) for r in latest
    ] + [(f"guardian:breaker:{r['symbol']}", "event", document(r)) for r in breakers]
    findings = []
    async with client.pipeline(transaction=False) as pipe:
        for key, field, _ in wanted:
            pipe.hget(key, field) if field else pipe.get(key)
        values = await pipe.execute()
    for (key, field, expected), seen in zip(wanted, values, strict=True):
        if (finding := compare(key, field, seen, expected)) is not None:
            findings.append(finding)
    return len(wanted), findings
