"""Database schema as plain versioned SQL files (NNNN_name.sql), applied in order, once each.

Applied versions are recorded in `guardian_schema_migrations`; an advisory lock makes
concurrent appliers (two workers starting together) wait instead of racing. The storage mode is
decided by `sinks.storage.mode_rule` and handed to the SQL as `guardian.use_timescaledb`.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

from guardian.sinks.storage import TIMESCALEDB, mode_by_rule

LOCK_ID = 0x6775617264  # "guard": any constant shared by every applier


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) pairs in version order."""
    files = sorted((f for f in resources.files(__package__).iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def apply_migrations(dsn: str) -> list[str]:
    """Apply the migrations not applied yet; returns the versions applied now."""
    conn = await asyncpg.connect(dsn)
    applied_now = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        use_timescaledb = await mode_by_rule(conn) == TIMESCALEDB
        await conn.execute("SELECT set_config('guardian.use_timescaledb', $1, false)", str(use_timescaledb).lower())
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS guardian_schema_migrations "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM guardian_schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO guardian_schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    finally:
        await conn.close()  # closing the session releases the advisory lock
    return applied_now
