"""One verification: the window, the three checks, a second look at what they found, and the report.

What is found on the first look is looked at again after `settle_s` (the fleet commits, in-flight rows
land, late keys move): only what is still wrong is reported, so a busy fleet does not raise alarms for
events it was about to store.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import redis.asyncio as redis

from guardian.cli_kit import iso
from guardian.settings import Settings
from guardian.stream_processors.consistency import hot_view, kafka_pg, ledger
from guardian.stream_processors.consistency.hot_view import KeyFinding
from guardian.stream_processors.consistency.kafka_pg import DecodedRecord, utc
from guardian.stream_processors.consistency.window import Window, take_window

ROWS_SLACK = timedelta(minutes=10)  # rows are searched by event time from this long before the window
# The sequences stored meanwhile inside each producer's lost spans, bounded by the spans' lowest and highest
# number: one pass over the window's rows, however many spans there are (a fleet far behind leaves
# thousands; one count per span walked the window once each and overran the verifier's deadline).
ARRIVED = """
SELECT e.producer_id, array_agg(DISTINCT e.sequence ORDER BY e.sequence) AS sequences
FROM guardian_events e JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS b(producer, lo, hi)
  ON e.producer_id = b.producer AND e.sequence BETWEEN b.lo AND b.hi
WHERE e.event_time >= $4
GROUP BY e.producer_id
"""
KINDS = ("missing_row", "lost_sequence", "duplicate_sequence", "stale_key", "corrupt_key", "missing_key")


@dataclass
class VerifyReport:
    window: Window
    rows_checked: int = 0
    keys_checked: int = 0
    dead_lettered: int = 0
    stored_elsewhere: int = 0
    missing: list[DecodedRecord] = field(default_factory=list)
    keys: list[KeyFinding] = field(default_factory=list)
    ledger: ledger.Ledger = field(default_factory=ledger.Ledger)
    seconds: float = 0.0

    def mismatches(self) -> dict[str, int]:
        totals = self.ledger.totals().values()
        counts = {kind: 0 for kind in KINDS}
        counts["missing_row"] = len(self.missing)
        counts["lost_sequence"] = sum(t["lost"] for t in totals)
        counts["duplicate_sequence"] = sum(t["duplicates"] for t in totals)
        for finding in self.keys:
            counts[finding.kind] += 1
        return counts

    @property
    def ok(self) -> bool:
        return not any(self.mismatches().values())

    def as_dict(self) -> dict:
        return {
            "ok": self.ok, "window_start": iso(self.window.start_s), "taken": iso(self.window.taken_s),
            "events": self.window.events, "rows_checked": self.rows_checked, "keys_checked": self.keys_checked,
            "dead_lettered": self.dead_lettered, "stored_from_another_offset": self.stored_elsewhere,
            "unread": self.window.unread, "never_committed": self.window.never_committed,
            "mismatches": self.mismatches(), "seconds": self.seconds,
            "missing_rows": [[r.partition, r.offset] for r in self.missing[:1000]],
            "keys": [f.describe() for f in self.keys[:1000]],
            "lost_sequences": {p: s[:100] for p, s in self.ledger.lost_spans.items()},
            "producers": self.ledger.totals(),
        }  # fmt: skip


def row_bounds(settings: Settings, window: Window) -> tuple:
    """The event times the window's rows are searched between."""
    return utc(window.start_s) - ROWS_SLACK, utc(time.time() + settings.max_future_skew_s + 60)


async def keys_now(settings: Settings, window: Window) -> list[KeyFinding]:
    """The hot view's wrong keys as they are now (after a repair re-drove rows: a key's newest row may be
    one of them, and what the first look expected is then out of date)."""
    conn = await asyncpg.connect(settings.postgres_dsn, timeout=10)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=30, socket_connect_timeout=5)
    try:
        return (await hot_view.check(conn, client, window.ranges, *row_bounds(settings, window)))[1]
    finally:
        await conn.close()
        await client.aclose()


async def verify(settings: Settings, since_s: float, settle_s: float = 10.0) -> VerifyReport:
    began = time.monotonic()
    window = await asyncio.to_thread(take_window, settings, since_s, settle_s)
    report = VerifyReport(window)
    rows_from, rows_to = row_bounds(settings, window)
    conn = await asyncpg.connect(settings.postgres_dsn, timeout=10)
    with contextlib.suppress(asyncpg.PostgresError):  # PostgreSQL 14+; older servers just lack the safeguard
        # A verification killed for overrunning (the fleet's watch does that) must not leave its query running
        # on the server: PostgreSQL checks every 2 s that the client is still there, and cancels it if not.
        await conn.execute("SET client_connection_check_interval = 2000")
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=30, socket_connect_timeout=5)
    try:
        found = await kafka_pg.check(conn, settings, window.ranges, rows_from, rows_to,
                                     int((window.start_s - ROWS_SLACK.total_seconds()) * 1000))  # fmt: skip
        report.dead_lettered = sum(found.dead_lettered.values())
        report.stored_elsewhere = len(found.stored_elsewhere)
        accounted = {(r.producer_id, r.sequence): "missing_rows" for r in found.missing if r.readable}
        accounted |= {key: "dead_lettered" for key in found.dead_sequences}
        accounted |= {(r.producer_id, r.sequence): "stored elsewhere" for r in found.stored_elsewhere}
        report.ledger = await ledger.build(conn, window.ranges, rows_from, rows_to, accounted)
        report.keys_checked, keys = await hot_view.check(conn, client, window.ranges, rows_from, rows_to)
        report.missing = found.missing
        if found.missing or keys or report.ledger.lost_spans:
            await asyncio.sleep(settle_s)
            report.missing = await _still_missing(conn, found.missing, rows_from)
            report.keys = await _still_wrong(client, keys)
            await _still_lost(conn, report.ledger, rows_from)
        report.rows_checked = window.events - report.dead_lettered - len(report.missing)
    finally:
        await conn.close()
        await client.aclose()
    report.seconds = round(time.monotonic() - began, 3)
    return report


async def _still_missing(conn: asyncpg.Connection, missing: list[DecodedRecord], rows_from) -> list[DecodedRecord]:
    readable = [r for r in missing if r.readable]
    if not readable:
        return missing
    stored = await kafka_pg.stored(conn, readable)
    return [r for i, r in enumerate(readable) if i not in stored] + [r for r in missing if not r.readable]


async def _still_wrong(client: redis.Redis, keys: list[KeyFinding]) -> list[KeyFinding]:
    still = []
    for finding in keys:
        seen = await (client.hget(finding.key, finding.field) if finding.field else client.get(finding.key))
        if (again := hot_view.compare(finding.key, finding.field, seen, finding.expected)) is not None:
            still.append(again)
    return still


async def _still_lost(conn: asyncpg.Connection, book: ledger.Ledger, rows_from) -> None:
    """Drop from the lost spans those stored meanwhile (in flight at the first look); the minute counts follow."""
    if not book.lost_spans:
        return
    producers = list(book.lost_spans)
    bounds = [(min(f for f, _ in book.lost_spans[p]), max(last for _, last in book.lost_spans[p])) for p in producers]
    rows = await conn.fetch(ARRIVED, producers, [lo for lo, _ in bounds], [hi for _, hi in bounds], rows_from,
                            timeout=300)  # fmt: skip
    for row in rows:
        for span in arrived(book.lost_spans[row["producer_id"]], row["sequences"]):
            book.found_after_all(row["producer_id"], span)


def arrived(spans: list[tuple[int, int]], stored: list[int]) -> list[tuple[int, int]]:
    """The spans every number of which is in `stored` (sorted, distinct)."""
    return [(first, last) for first, last in spans
            if bisect.bisect_right(stored, last) - bisect.bisect_left(stored, first) == last - first + 1]  # fmt: skip
