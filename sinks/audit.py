"""The audit trail (`guardian_audit`): every operation that changes or reveals state, who did it, how it ended.

`record()` appends one row (`append()`, on a connection the caller holds). `audited()` wraps a whole
operation (a CLI command, a worker's recovery action): it measures the duration and records the
parameters, the outcome the operation reports and, if it raised, the error, as one row, whatever happens.
The table's triggers chain the rows and refuse changes (sinks/migrations/0004_audit_chain.sql).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from guardian.logs import get_logger

log = get_logger(__name__)
OK = 0
FAILED = 1
CONNECT_TIMEOUT_S = 5
INSERT = (
    "INSERT INTO guardian_audit (actor, action, target, status, detail, duration_s) VALUES ($1, $2, $3, $4, $5, $6)"
)


def operator() -> str:
    """Who runs this process, as the audit names them: `user@host`, or GUARDIAN_AUDIT_ACTOR when another
    service runs it on someone's behalf (the API names the token: `token:NAME via user@host`)."""
    from guardian.settings import get_settings

    if on_behalf := get_settings().audit_actor:
        return on_behalf
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def json_ready(value: Any) -> Any:
    """`value` as JSON can hold it: non-string keys (partition numbers, ids) as strings, NaN and
    infinities as null (jsonb refuses them), tuples as lists; anything else json.dumps() leaves to str()."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


async def append(db: asyncpg.Connection | asyncpg.Pool, action: str, *, actor: str, target: str | None = "",
                 status: int | None = OK, detail: dict | None = None,
                 duration_s: float | None = None) -> None:  # fmt: skip
    """Insert one row on an open connection or pool. The table's trigger gives it its id, time and place
    in the hash chain (sinks/migrations/0004_audit_chain.sql)."""
    await db.execute(
        INSERT,
        actor, action, target, status, json.dumps(json_ready(detail or {}), default=str),
        None if duration_s is None else round(duration_s, 6),
    )  # fmt: skip


async def record(dsn: str, action: str, *, target: str = "", status: int = OK, detail: dict | None = None,
                 actor: str | None = None, duration_s: float | None = None) -> bool:  # fmt: skip
    """Append one row; False (and a log line) when PostgreSQL is unreachable: an operation is never
    blocked by its audit, but the log says the row is missing."""
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
        try:
            await append(conn, action, actor=actor or operator(), target=target, status=status, detail=detail,
                         duration_s=duration_s)  # fmt: skip
        finally:
            await conn.close()
        return True
    except Exception as exc:
        log.error("audit row not written", action=action, target=target, error=repr(exc))
        return False


def record_sync(dsn: str, action: str, **kwargs: Any) -> bool:
    """`record()` from synchronous code, inside a running event loop or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(record(dsn, action, **kwargs))
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(asyncio.run(record(dsn, action, **kwargs))))
    worker.start()
    worker.join()
    return result[0]


@dataclass
class AuditEntry:
    """What an audited operation fills in as it goes: stored as the row's `outcome`."""

    outcome: dict[str, Any] = field(default_factory=dict)
    status: int = OK  # an operation that ends without raising but found a problem (verify) sets FAILED


@contextmanager
def audited(dsn: str, action: str, *, target: str = "", params: dict | None = None,
            actor: str | None = None) -> Iterator[AuditEntry]:  # fmt: skip
    """One audit row for the operation inside the block: parameters, outcome, error, duration."""
    entry = AuditEntry()
    began = time.monotonic()
    detail: dict[str, Any] = {"params": params or {}}
    try:
        yield entry
    except BaseException as exc:
        detail["error"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        entry.status = FAILED
        raise
    finally:
        detail["outcome"] = entry.outcome
        record_sync(dsn, action, target=target, status=entry.status, detail=detail, actor=actor,
                    duration_s=time.monotonic() - began)  # fmt: skip
