"""API tokens: `gdn_<id>_<secret>`, a role each, only a salted hash stored (guardian_api_tokens).

The secret is 32 random bytes, so a fast hash is as good as a slow one here (nobody brute-forces 256
bits) and costs a request microseconds, not the ~100 ms a password KDF would. The `id` is public: it
finds the row, then the hash is compared in constant time. Revoking inserts a row (the tables are
append-only for the application role, sinks/migrations/0006_api_tokens.sql).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

import asyncpg

from guardian.errors import ConfigError, GuardianError

PREFIX = "gdn"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 10
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# An unknown id is hashed against this salt, so a wrong id costs what a wrong secret costs.
_DUMMY_SALT = secrets.token_bytes(16)


class Role(IntEnum):
    """Each role may do what the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ConfigError(f"unknown role {name!r}: viewer, operator or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class TokenError(GuardianError):
    """A token cannot be created or revoked as asked (duplicate name, unknown token)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (what the audit trail records) and its role."""

    name: str
    role: Role
    token_id: str | None = None  # None for the break-glass GUARDIAN_API_TOKEN

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(token_id) != ID_LENGTH or not secret:
        return None
    return token_id, secret


def digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def fingerprint(token: str) -> str:
    """How the audit names a token that matched nothing: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


async def create(db: asyncpg.Pool | asyncpg.Connection, name: str, role: Role, *, created_by: str) -> str:
    """Store a new token and return it: the only time its secret exists outside the caller's hands."""
    if not NAME.match(name):
        raise TokenError(f"token name {name!r}: letters, digits and _ . @ - only, up to 64 characters")
    token_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    try:
        await db.execute(
            "INSERT INTO guardian_api_tokens (id, name, role, salt, hash, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
            token_id, name, role.label, salt, digest(salt, secret), created_by,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise TokenError(f"a token named {name!r} exists or existed: names are never reused") from None
    return f"{PREFIX}_{token_id}_{secret}"


async def verify(db: asyncpg.Pool | asyncpg.Connection, token: str) -> Principal | None:
    """The principal of a valid, unrevoked token; None otherwise (in about the same time)."""
    parts = split(token)
    token_id, secret = parts if parts else ("", token)
    row = await db.fetchrow(
        "SELECT t.name, t.role, t.salt, t.hash, r.token_id IS NOT NULL AS revoked FROM guardian_api_tokens t"
        " LEFT JOIN guardian_api_token_revocations r ON r.token_id = t.id WHERE t.id = $1",
        token_id,
    )
    salt, expected = (row["salt"], row["hash"]) if row else (_DUMMY_SALT, b"\0" * 32)
    matches = hmac.compare_digest(digest(salt, secret), expected)
    if row is None or not matches or row["revoked"]:
        return None
    return Principal(row["name"], Role.parse(row["role"]), token_id)


async def listing(db: asyncpg.Pool | asyncpg.Connection) -> list[TokenInfo]:
    rows = await db.fetch(
        "SELECT t.id, t.name, t.role, t.created_at, t.created_by, r.revoked_at, r.revoked_by"
        " FROM guardian_api_tokens t LEFT JOIN guardian_api_token_revocations r ON r.token_id = t.id"
        " ORDER BY t.created_at"
    )
    return [TokenInfo(**dict(r)) for r in rows]


async def revoke(db: asyncpg.Pool | asyncpg.Connection, name_or_id: str, *, revoked_by: str) -> TokenInfo:
    """Revoke by name or id; revoking twice is an error that says when it happened."""
    row = await db.fetchrow("SELECT id FROM guardian_api_tokens WHERE id = $1 OR name = $1", name_or_id)
    if row is None:
        raise TokenError(f"no token named or with id {name_or_id!r}")
    inserted = await db.fetchval(
        "INSERT INTO guardian_api_token_revocations (token_id, revoked_by) VALUES ($1, $2)"
        " ON CONFLICT (token_id) DO NOTHING RETURNING token_id",
        row["id"], revoked_by,
    )  # fmt: skip
    info = next(t for t in await listing(db) if t.id == row["id"])
    if inserted is None:
        raise TokenError(f"token {info.name!r} was already revoked at {info.revoked_at} by {info.revoked_by}")
    return info


async def has_active_admin(db: asyncpg.Pool | asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM guardian_api_tokens t LEFT JOIN guardian_api_token_revocations r"
            " ON r.token_id = t.id WHERE t.role = 'admin' AND r.token_id IS NULL)"
        )
    )
