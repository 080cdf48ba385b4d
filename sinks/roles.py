"""The application's database role: a LOGIN member of `guardian_writer` (read, append; no UPDATE/DELETE).

`guardian stack init` (and `stack up`) make it after the migrations, as the owner: named by the user of
GUARDIAN_POSTGRES_DSN, with that DSN's password if it has one (the local stack trusts loopback, so
there it has none). When both DSNs name the same role there is nothing to make: one role does both.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import asyncpg

WRITER = "guardian_writer"


def dsn_user(dsn: str) -> tuple[str | None, str | None]:
    """(user, password) of a postgresql:// DSN; None where the DSN does not say."""
    parts = urlsplit(dsn)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return user, password


async def ensure_app_role(admin_dsn: str, app_dsn: str) -> list[str]:
    """Create (or bring up to date) the application role; what was done, as report lines."""
    user, password = dsn_user(app_dsn)
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        owner = await conn.fetchval("SELECT current_user")
        if user is None or user == owner:
            return [f"application role = the owner ({owner}): guardian_audit is not append-only for it"]
        if not await conn.fetchval("SELECT guardian_grant_writer()"):  # the group role and its grants, again
            return [f"no {WRITER} role ({owner} has no CREATEROLE): docs/operations.md says what to run"]
        done = []
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
            statement = await conn.fetchval("SELECT format('CREATE ROLE %I LOGIN', $1::text)", user)
            try:
                await conn.execute(statement)
                done.append(f"created role {user}")
            except asyncpg.DuplicateObjectError:
                pass  # made by a concurrent init
        if not await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", user, WRITER):
            await conn.execute(await conn.fetchval("SELECT format('GRANT %I TO %I', $1::text, $2::text)", WRITER, user))
            done.append(f"granted {WRITER} to {user}")
        if password is not None:
            statement = await conn.fetchval("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", user,
                                            password)  # fmt: skip
            await conn.execute(statement)
        return done
    finally:
        await conn.close()
