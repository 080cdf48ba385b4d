"""Verifying the audit trail's hash chain (`guardian audit verify`).

Each row of `guardian_audit` stores `hash` = guardian_audit_hash(the row's fields, prev_hash) and
`prev_hash` = the hash of the row before it (32 zero bytes for the first). The database computes the
hash of every row as it is stored now (the same SQL function the insert trigger used), and
`check_chain()` walks the rows in id order:

- a row whose hash differs from its content's hash was edited;
- a row whose prev_hash differs from the previous row's hash has had a row before it deleted (or the
  previous row rewritten together with its hash).

Rows deleted at the end leave a shorter, valid chain: only a head kept elsewhere (`--anchor`) shows them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

GENESIS = bytes(32)  # prev_hash of the first row (guardian_audit_genesis())
ROWS = (
    "SELECT id, prev_hash, hash,"
    " guardian_audit_hash(id, at, actor, action, target, status, detail, duration_s, prev_hash) AS expected"
    " FROM guardian_audit ORDER BY id"
)
ROLE_FACTS = """
SELECT current_user AS role,
       r.rolsuper AS superuser,
       pg_has_role(current_user, c.relowner, 'USAGE') AS owner,
       has_table_privilege('guardian_audit', 'UPDATE') OR has_table_privilege('guardian_audit', 'DELETE')
           OR has_table_privilege('guardian_audit', 'TRUNCATE') AS may_change,
       ARRAY(SELECT tgname::text FROM pg_trigger
             WHERE tgrelid = c.oid AND NOT tgisinternal AND tgenabled = 'D' ORDER BY tgname) AS disabled
FROM pg_class c, pg_roles r
WHERE c.oid = 'guardian_audit'::regclass AND r.rolname = current_user
"""


@dataclass(frozen=True)
class ChainRow:
    id: int
    prev_hash: bytes | None
    hash: bytes | None
    expected: bytes  # the hash of the row's content as stored now


@dataclass(frozen=True)
class Anchor:
    """A row's id and hash noted earlier (printed by a previous verify), kept where the database cannot
    change it: the chain must still pass through it."""

    id: int
    hash: bytes

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """`ID:HEX`, as `guardian audit verify` prints the head."""
        ident, sep, hexed = text.partition(":")
        try:
            anchor = cls(int(ident), bytes.fromhex(hexed))
        except ValueError:
            anchor = None
        if not sep or anchor is None or len(anchor.hash) != len(GENESIS):
            raise ValueError(f"{text!r}: expected ID:HASH (the row id and its 64 hex digits)")
        return anchor


@dataclass(frozen=True)
class ChainBreak:
    id: int
    reason: str


@dataclass
class ChainCheck:
    rows: int = 0
    first_id: int | None = None
    last_id: int | None = None
    head: bytes | None = None  # the newest row's hash
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


class ChainWalk:
    """The check, one row at a time in id order (the rows stream from a cursor); stops at the first break."""

    def __init__(self, anchor: Anchor | None = None) -> None:
        self.anchor = anchor
        self.check = ChainCheck()
        self.previous: ChainRow | None = None

    def step(self, row: ChainRow) -> bool:
        """False once the chain is broken (at this row or before)."""
        if self.check.broken is not None:
            return False
        broken = _row_break(row, self.previous)
        if broken is None and self.anchor is not None and row.id == self.anchor.id and row.hash != self.anchor.hash:
            broken = ChainBreak(row.id, "its hash is not the anchor's: it, or a row before it, was rewritten")
        if broken is not None:
            self.check.broken = broken
            return False
        check = self.check
        check.rows += 1
        check.first_id = row.id if check.first_id is None else check.first_id
        check.last_id, check.head = row.id, row.hash
        self.previous = row
        return True

    def finish(self) -> ChainCheck:
        check, anchor = self.check, self.anchor
        if check.broken is None and anchor is not None:
            if check.last_id is None or check.last_id < anchor.id:
                check.broken = ChainBreak(anchor.id, "the anchor row is gone: rows at the end were deleted")
            elif check.first_id is not None and check.first_id > anchor.id:
                check.broken = ChainBreak(anchor.id, "the anchor row is gone: the rows before it were deleted")
        return check


def check_chain(rows: Iterable[ChainRow], anchor: Anchor | None = None) -> ChainCheck:
    """Walk the rows in id order; stop at the first break."""
    walk = ChainWalk(anchor)
    for row in rows:
        if not walk.step(row):
            break
    return walk.finish()


def _row_break(row: ChainRow, previous: ChainRow | None) -> ChainBreak | None:
    if row.hash is None or row.prev_hash is None:
        return ChainBreak(row.id, "not chained: inserted while the chain trigger was disabled")
    if row.hash != row.expected:
        return ChainBreak(row.id, "edited: its content no longer matches its hash")
    if previous is None and row.prev_hash != GENESIS:
        return ChainBreak(row.id, "prev_hash is not the start of the chain: the rows before it were deleted")
    if previous is not None and row.prev_hash != previous.hash:
        return ChainBreak(
            row.id,
            f"prev_hash does not match row {previous.id}'s hash: a row between {previous.id} and {row.id} was "
            f"deleted (or row {previous.id} rewritten with a new hash)",
        )
    return None


async def verify(dsn: str, anchor: Anchor | None = None) -> tuple[ChainCheck, list[str]]:
    """The chain as stored now (one consistent snapshot), and warnings about the role reading it."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        warnings = role_warnings(await conn.fetchrow(ROLE_FACTS))
        walk = ChainWalk(anchor)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for record in conn.cursor(ROWS, prefetch=10_000):
                if not walk.step(ChainRow(**record)):
                    break
        return walk.finish(), warnings
    finally:
        await conn.close()


def role_warnings(facts: asyncpg.Record | dict) -> list[str]:
    """What makes the trail less than append-only for the role that verifies it (the application's)."""
    role = facts["role"]
    warnings = []
    if facts["superuser"]:
        warnings.append(f"role {role} is a superuser: it can disable the triggers and rewrite guardian_audit")
    elif facts["owner"]:
        warnings.append(
            f"role {role} owns guardian_audit: it can disable the triggers and rewrite rows. Give the application "
            "its own role (GUARDIAN_POSTGRES_DSN) and keep the owner for GUARDIAN_POSTGRES_ADMIN_DSN"
        )
    elif facts["may_change"]:
        warnings.append(f"role {role} may UPDATE, DELETE or TRUNCATE guardian_audit: revoke it")
    if facts["disabled"]:
        warnings.append(f"disabled trigger(s) on guardian_audit: {', '.join(facts['disabled'])}")
    return warnings
