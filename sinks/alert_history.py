"""Alert and notification history in PostgreSQL (sinks/migrations/0005_alert_history.sql).

Writers: the worker fleet's alert archive (`insert_changes`, from guardian.alerts.v1) and its
notification log (`insert_notifications`, one row per attempt). Both are idempotent: the same
transition archived or notified twice inserts nothing the second time.

Readers (the API, `guardian alerts history`): `alert_changes()` and `notifications()`, newest first,
paged by a keyset cursor `Cursor(at, id)`: pass a page's `next_cursor` as `before` for the next page.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_LIMIT = 1000
ERROR_MAX = 500  # characters of an attempt's error kept (a receiver may answer with a whole page)
CHANNELS = ("webhook", "redis")
OUTCOMES = ("delivered", "retried", "failed", "silenced")

Db = asyncpg.Connection | asyncpg.Pool


def micros_to_datetime(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


def notification_key(fingerprint: str, status: str, starts_at_us: int, notified_at_us: int | None) -> str:
    """The identity of one notified transition: the same alert, status, start and notification time.
    A repeat has a new notification time, so a new key; a republished or replayed record the same one."""
    text = f"{fingerprint}|{status}|{starts_at_us}|{'-' if notified_at_us is None else notified_at_us}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def redact_receiver(url: str) -> str:
    """`scheme://host[:port]` of a webhook URL: its user, password, path and query may hold secrets
    (Slack and PagerDuty put the token in the path), so none of them is stored."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        return "invalid-url"
    if not parts.scheme or not host:
        return "invalid-url"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


# --- writing ------------------------------------------------------------------------------------
CHANGE_COLUMNS = (
    ("change_key", "text"), ("at", "timestamptz"), ("fingerprint", "text"), ("rule", "text"),
    ("severity", "text"), ("status", "text"), ("symbol", "text"), ("labels", "text"), ("summary", "text"),
    ("starts_at", "timestamptz"), ("ends_at", "timestamptz"), ("event_id", "uuid"), ("event_time", "timestamptz"),
    ("notified_at", "timestamptz"), ("repeat", "bool"), ("silenced", "bool"), ("kafka_partition", "int4"),
    ("kafka_offset", "int8"),
)  # fmt: skip
INSERT_CHANGES = (
    f"INSERT INTO guardian_alert_changes ({', '.join(name for name, _ in CHANGE_COLUMNS)})"
    f" SELECT {', '.join('labels::jsonb' if name == 'labels' else name for name, _ in CHANGE_COLUMNS)}"
    f" FROM unnest({', '.join(f'${i}::{kind}[]' for i, (_, kind) in enumerate(CHANGE_COLUMNS, 1))})"
    f" AS t({', '.join(name for name, _ in CHANGE_COLUMNS)})"
    " ON CONFLICT (change_key) DO NOTHING"
)


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:  # events are validated as UUIDs; anything else cannot name one
        return None


def change_row(record: dict, partition: int, offset: int) -> tuple:
    """The guardian_alert_changes row of a decoded AlertEvent (timestamps as integer microseconds)."""
    notified_us = record.get("notified_at")
    own_time = record["ends_at"] if record["status"] == "RESOLVED" and record["ends_at"] else record["starts_at"]
    return (
        notification_key(record["fingerprint"], record["status"], record["starts_at"], notified_us),
        micros_to_datetime(notified_us if notified_us is not None else own_time),
        record["fingerprint"],
        record["rule"],
        record["severity"],
        record["status"],
        record.get("symbol"),
        json.dumps(record.get("labels") or {}, sort_keys=True),
        record["summary"],
        micros_to_datetime(record["starts_at"]),
        micros_to_datetime(record.get("ends_at")),
        _uuid_or_none(record.get("event_id")),
        micros_to_datetime(record.get("event_time")),
        micros_to_datetime(notified_us),
        bool(record.get("repeat", False)),
        bool(record.get("silenced", False)),
        partition,
        offset,
    )


async def insert_changes(db: Db, rows: Sequence[tuple]) -> int:
    """Insert `change_row()` rows in one statement; how many were new."""
    if not rows:
        return 0
    columns = [list(column) for column in zip(*rows, strict=True)]
    status = await db.execute(INSERT_CHANGES, *columns, timeout=30)
    return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True)
class Attempt:
    """One notification attempt, as the worker records it."""

    notification_key: str
    fingerprint: str
    symbol: str | None
    rule: str
    status: str
    channel: str  # webhook | redis
    receiver: str  # redact_receiver() of a webhook URL; the pub/sub channel's name for redis
    attempt: int
    outcome: str  # delivered | retried | failed | silenced
    at: datetime
    http_status: int | None = None
    error: str | None = None
    latency_s: float | None = None

    def row(self) -> tuple:
        return (
            self.notification_key, self.fingerprint, self.symbol, self.rule, self.status, self.channel,
            self.receiver, self.attempt, self.outcome, self.http_status,
            None if self.error is None else self.error[:ERROR_MAX], self.latency_s, self.at,
        )  # fmt: skip


ATTEMPT_COLUMNS = (
    ("notification_key", "text"), ("fingerprint", "text"), ("symbol", "text"), ("rule", "text"), ("status", "text"),
    ("channel", "text"), ("receiver", "text"), ("attempt", "int4"), ("outcome", "text"), ("http_status", "int4"),
    ("error", "text"), ("latency_s", "float8"), ("at", "timestamptz"),
)  # fmt: skip
INSERT_ATTEMPTS = (
    f"INSERT INTO guardian_notifications ({', '.join(name for name, _ in ATTEMPT_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'${i}::{kind}[]' for i, (_, kind) in enumerate(ATTEMPT_COLUMNS, 1))})"
    " ON CONFLICT (notification_key, receiver, attempt, channel) DO NOTHING"
)


async def insert_notifications(db: Db, attempts: Sequence[Attempt]) -> int:
    """Insert attempts in one statement; how many were new."""
    if not attempts:
        return 0
    columns = [list(column) for column in zip(*(a.row() for a in attempts), strict=True)]
    status = await db.execute(INSERT_ATTEMPTS, *columns, timeout=30)
    return int(status.rsplit(" ", 1)[-1])


# --- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the next page has rows strictly before (at, id), newest first."""

    at: datetime
    id: int | str  # a row id; a silence id for silence history


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: Cursor | None  # None: this was the last page


def _where(filters: Sequence[tuple[str, Any]], before: Cursor | None) -> tuple[str, list[Any]]:
    conditions, args = [], []
    for template, value in filters:
        if value is not None:
            args.append(value)
            conditions.append(template.format(f"${len(args)}"))
    if before is not None:
        args += [before.at, before.id]
        conditions.append(f"(at, id) < (${len(args) - 1}, ${len(args)})")
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), args


async def _page(db: Db, table: str, columns: str, filters: Sequence[tuple[str, Any]], before: Cursor | None,
                limit: int) -> Page:  # fmt: skip
    limit = max(1, min(limit, MAX_LIMIT))
    where, args = _where(filters, before)
    args.append(limit + 1)  # one more tells whether there is a next page
    rows = await db.fetch(f"SELECT {columns} FROM {table}{where} ORDER BY at DESC, id DESC LIMIT ${len(args)}", *args)
    items = [dict(r) for r in rows[:limit]]
    last = items[-1] if len(rows) > limit else None
    return Page(items, Cursor(last["at"], last["id"]) if last else None)


CHANGE_FIELDS = (
    "id, at, fingerprint, rule, severity, status, symbol, labels, summary, starts_at, ends_at, event_id, event_time, "
    "notified_at, repeat, silenced, kafka_partition, kafka_offset, recorded_at"
)
NOTIFICATION_FIELDS = (
    "id, at, notification_key, fingerprint, symbol, rule, status, channel, receiver, attempt, outcome, http_status, "
    "error, latency_s"
)


async def alert_changes(db: Db, *, symbol: str | None = None, rule: str | None = None, fingerprint: str | None = None,
                        since: datetime | None = None, until: datetime | None = None, before: Cursor | None = None,
                        limit: int = 100) -> Page:  # fmt: skip
    """Alert state changes, newest first (`at` desc, then id desc); `since` inclusive, `until` exclusive.
    Items: CHANGE_FIELDS as keys; labels a dict, event_id a str (or None), times aware datetimes."""
    page = await _page(
        db, "guardian_alert_changes", CHANGE_FIELDS,
        [("symbol = {}", symbol), ("rule = {}", rule), ("fingerprint = {}", fingerprint), ("at >= {}", since),
         ("at < {}", until)],
        before, limit,
    )  # fmt: skip
    for item in page.items:
        labels = item["labels"]
        item["labels"] = json.loads(labels) if isinstance(labels, str) else labels
        item["event_id"] = None if item["event_id"] is None else str(item["event_id"])
    return page


async def notifications(db: Db, *, fingerprint: str | None = None, symbol: str | None = None,
                        since: datetime | None = None, until: datetime | None = None, before: Cursor | None = None,
                        limit: int = 100) -> Page:  # fmt: skip
    """Notification attempts, newest first; items have NOTIFICATION_FIELDS as keys."""
    return await _page(
        db, "guardian_notifications", NOTIFICATION_FIELDS,
        [("fingerprint = {}", fingerprint), ("symbol = {}", symbol), ("at >= {}", since), ("at < {}", until)],
        before, limit,
    )  # fmt: skip


# --- retention (the owner's role: the application may not delete) -----------------------------
async def delete_older_than(conn: asyncpg.Connection, horizon: datetime) -> dict[str, int]:
    """Delete history from before `horizon`: changes and attempts by their time, silences (with their
    expiration) that expired before it. Rows deleted per table."""
    deleted = {}
    async with conn.transaction():
        for table, condition in (
            ("guardian_alert_changes", "at < $1"),
            ("guardian_notifications", "at < $1"),
            ("guardian_silence_expirations",
             "silence_id IN (SELECT id FROM guardian_silences WHERE expires_at < $1)"),
            ("guardian_silences", "expires_at < $1"),
        ):  # fmt: skip
            status = await conn.execute(f"DELETE FROM {table} WHERE {condition}", horizon)
            deleted[table] = int(status.rsplit(" ", 1)[-1])
    return deleted
