"""The audit trail (`guardian_audit`): every operation that changes state, who did it, and how it ended."""

from __future__ import annotations

import getpass
import os
import socket

import asyncpg
import orjson

from guardian.logs import get_logger

log = get_logger(__name__)


def operator() -> str:
    """Who runs this process, as the audit names them: `user@host`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


async def record(dsn: str, action: str, *, target: str = "", status: int = 0, detail: dict | None = None,
                 actor: str | None = None) -> bool:  # fmt: skip
    """Append one row; False (and a log line) when PostgreSQL is unreachable: an operation is never
    blocked by its audit, but the log says the row is missing."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(
                "INSERT INTO guardian_audit (actor, action, target, status, detail) VALUES ($1, $2, $3, $4, $5)",
                actor or operator(), action, target, status, orjson.dumps(detail or {}).decode(),
            )  # fmt: skip
        finally:
            await conn.close()
        return True
    except Exception as exc:
        log.error("audit row not written", action=action, target=target, error=repr(exc))
        return False
