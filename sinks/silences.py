"""Silences: the live set in Redis, their history in PostgreSQL. The CLI and the API both go through here.

- Live: the Redis hash `guardian:silences`, id -> JSON `{matchers, expires_at_us, comment, created_by}`.
  The alert hook reloads it every second (stream_processors/alerts/hook.py) and the fleet checkpoints
  it (recovery/state.py); both read only `matchers`, `expires_at_us` and `comment`, so the added
  `created_by` changes nothing for them. A silence is active while it is in the hash and unexpired.
- History: `guardian_silences` (who made it, for what, until when) and `guardian_silence_expirations`
  (who ended it early): append-only, so ending a silence is a new row, never an UPDATE.

Order of writes: PostgreSQL first, then Redis, so no silence mutes anything without its history row.
A create whose Redis write fails is recorded as expired at once (`by = "apply-failed"`) and raises.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as redis

from guardian.errors import GuardianError
from guardian.sinks.alert_history import Cursor, Db, Page

SILENCES = "guardian:silences"
APPLY_FAILED = "apply-failed"
UNKNOWN_AUTHOR = "unknown (made before silence history)"
MAX_LIMIT = 1000


class SilenceError(GuardianError, ValueError):
    """A silence that cannot be made as asked (no matchers, an expiry in the past): the caller's mistake."""


class SilenceNotApplied(SilenceError):
    """Redis refused the silence: recorded as ended (`apply-failed`); try again (an API answers 503)."""


@dataclass(frozen=True)
class Live:
    """A silence as the Redis hash holds it."""

    id: str
    matchers: dict[str, str]
    expires_at_us: int
    comment: str
    created_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": self.matchers,
            "comment": self.comment,
            "expires_at": datetime.fromtimestamp(self.expires_at_us / 1e6, UTC),
            "created_by": self.created_by,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(silence_id: bytes | str, body: bytes | str) -> Live:
    data = json.loads(body)
    return Live(_text(silence_id), data["matchers"], int(data["expires_at_us"]), data.get("comment", ""),
                data.get("created_by"))  # fmt: skip


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def _check_matchers(matchers: dict[str, str]) -> dict[str, str]:
    if not matchers:
        raise SilenceError("a silence needs at least one matcher (rule, severity or a label = value)")
    for name, value in matchers.items():
        if not isinstance(name, str) or not isinstance(value, str) or not name or not value:
            raise SilenceError(f"matcher {name!r}={value!r}: name and value must be non-empty strings")
    return dict(matchers)


async def create(client: redis.Redis, db: Db, matchers: dict[str, str], *, created_by: str,
                 duration_s: float | None = None, expires_at: datetime | None = None, comment: str = "",
                 silence_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Make a silence for `duration_s` from now, or until `expires_at` (exactly one of them); `silence_id`
    when the caller needs it first (an audit row's target), else a new one.
    Returns {id, matchers, comment, starts_at, expires_at, created_by}."""
    matchers = _check_matchers(matchers)
    if (duration_s is None) == (expires_at is None):
        raise SilenceError("give a duration or an expiry time (one of them)")
    starts_at = datetime.now(UTC)
    if expires_at is None:
        expires_at = starts_at + timedelta(seconds=duration_s or 0)
    if expires_at.tzinfo is None:
        raise SilenceError("expires_at must carry a time zone")
    if expires_at <= starts_at:
        raise SilenceError(f"expires_at {expires_at.isoformat()} is not in the future")
    silence_id = silence_id or new_id()
    await db.execute(
        "INSERT INTO guardian_silences (id, matchers, comment, starts_at, expires_at, created_by)"
        " VALUES ($1, $2::jsonb, $3, $4, $5, $6)",
        silence_id, json.dumps(matchers, sort_keys=True), comment, starts_at, expires_at, created_by,
    )  # fmt: skip
    body = {"matchers": matchers, "expires_at_us": int(expires_at.timestamp() * 1_000_000), "comment": comment,
            "created_by": created_by}  # fmt: skip
    try:
        await client.hset(SILENCES, silence_id, json.dumps(body))
    except redis.RedisError as exc:
        await _expire_row(db, silence_id, APPLY_FAILED)
        raise SilenceNotApplied(f"silence {silence_id} not applied, Redis refused it: {exc!r}") from exc
    return {"id": silence_id, "matchers": matchers, "comment": comment, "starts_at": starts_at,
            "expires_at": expires_at, "created_by": created_by}  # fmt: skip


async def _expire_row(db: Db, silence_id: str, by: str) -> None:
    await db.execute(
        "INSERT INTO guardian_silence_expirations (silence_id, by) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        silence_id, by,
    )  # fmt: skip


async def get(client: redis.Redis, silence_id: str) -> Live | None:
    """The live silence with this id (expired or not), or None."""
    body = await client.hget(SILENCES, silence_id)
    return None if body is None else _parse(silence_id, body)


async def expire(client: redis.Redis, db: Db, silence_id: str, by: str) -> bool:
    """End a live silence now; False when there is none with this id (removed already, or never made).
    A silence made before this history existed gets its row first, with an unknown author."""
    live = await get(client, silence_id)
    if live is None:
        return False
    if live.expires_at_us <= time.time() * 1e6:  # over already: nothing to end, only a stale key
        await client.hdel(SILENCES, silence_id)
        return False
    await db.execute(
        "INSERT INTO guardian_silences (id, matchers, comment, starts_at, expires_at, created_by)"
        " VALUES ($1, $2::jsonb, $3, now(), $4, $5) ON CONFLICT (id) DO NOTHING",
        silence_id, json.dumps(live.matchers, sort_keys=True), live.comment,
        datetime.fromtimestamp(live.expires_at_us / 1e6, UTC), live.created_by or UNKNOWN_AUTHOR,
    )  # fmt: skip
    await _expire_row(db, silence_id, by)
    return bool(await client.hdel(SILENCES, silence_id))


async def active(client: redis.Redis, now_us: float | None = None) -> list[dict[str, Any]]:
    """Silences muting alerts now, soonest expiry first: {id, matchers, comment, expires_at, created_by}."""
    now_us = time.time() * 1e6 if now_us is None else now_us
    live = [_parse(k, v) for k, v in (await client.hgetall(SILENCES)).items()]
    return [s.as_dict() for s in sorted(live, key=lambda s: (s.expires_at_us, s.id)) if s.expires_at_us > now_us]


async def prune(client: redis.Redis, now_us: float | None = None) -> list[str]:
    """Remove expired silences from the hash (the engine ignores them already); the ids removed."""
    now_us = time.time() * 1e6 if now_us is None else now_us
    stale = [_text(k) for k, v in (await client.hgetall(SILENCES)).items() if _parse(k, v).expires_at_us <= now_us]
    if stale:
        await client.hdel(SILENCES, *stale)
    return stale


HISTORY = (
    "SELECT s.id, s.matchers, s.comment, s.starts_at, s.expires_at, s.created_by, e.at AS expired_at,"
    " e.by AS expired_by FROM guardian_silences s LEFT JOIN guardian_silence_expirations e ON e.silence_id = s.id"
)


async def history(db: Db, *, since: datetime | None = None, created_by: str | None = None,
                  before: Cursor | None = None, limit: int = 100) -> Page:  # fmt: skip
    """Silences as made, newest first (starts_at desc, id desc), with who ended them early if anyone did.
    Items: {id, matchers, comment, starts_at, expires_at, created_by, expired_at, expired_by, ends_at}.
    The cursor's `id` is the silence id (a string)."""
    limit = max(1, min(limit, MAX_LIMIT))
    conditions, args = [], []
    for template, value in (("s.starts_at >= {}", since), ("s.created_by = {}", created_by)):
        if value is not None:
            args.append(value)
            conditions.append(template.format(f"${len(args)}"))
    if before is not None:
        args += [before.at, str(before.id)]
        conditions.append(f"(s.starts_at, s.id) < (${len(args) - 1}, ${len(args)})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit + 1)
    rows = await db.fetch(f"{HISTORY}{where} ORDER BY s.starts_at DESC, s.id DESC LIMIT ${len(args)}", *args)
    items = []
    for row in rows[:limit]:
        item = dict(row)
        item["matchers"] = json.loads(item["matchers"]) if isinstance(item["matchers"], str) else item["matchers"]
        ended = item["expired_at"]
        item["ends_at"] = min(item["expires_at"], ended) if ended is not None else item["expires_at"]
        items.append(item)
    last = items[-1] if len(rows) > limit else None
    return Page(items, Cursor(last["starts_at"], last["id"]) if last else None)
