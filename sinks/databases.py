"""Databases beside the configured one, on the same server: a scratch copy of the schema for a test or a
benchmark (a database of its own, so what it stores and breaks is not mixed with other rows), and the
DSN of one."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from guardian.sinks.migrations import apply_migrations


def in_database(dsn: str, name: str) -> str:
    """`dsn` with another database: same server, role and options."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def _admin(admin_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(admin_dsn: str, name: str, *, migrate: bool = True) -> str:
    """Create database `name` (the schema applied unless `migrate` is False); returns the owner's DSN of it."""
    quoted = '"' + name.replace('"', '""') + '"'
    await _admin(admin_dsn, f"CREATE DATABASE {quoted}")
    dsn = in_database(admin_dsn, name)
    if migrate:
        await apply_migrations(dsn)
    return dsn


async def drop_database(admin_dsn: str, name: str) -> None:
    quoted = '"' + name.replace('"', '""') + '"'
    await _admin(admin_dsn, f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
