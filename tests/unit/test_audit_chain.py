"""The audit chain's check, on rows made here (the hashes come from the database in real use)."""

from __future__ import annotations

import hashlib

import pytest

from guardian.sinks.audit_chain import GENESIS, Anchor, ChainRow, check_chain, role_warnings


def chain(count: int) -> list[ChainRow]:
    """A valid chain: any hash function works for the check, which compares stored with expected."""
    rows, prev = [], GENESIS
    for i in range(1, count + 1):
        digest = hashlib.sha256(prev + str(i).encode()).digest()
        rows.append(ChainRow(i, prev, digest, digest))
        prev = digest
    return rows


def test_a_valid_chain_reports_its_rows_and_head():
    rows = chain(4)
    check = check_chain(rows)
    assert check.ok and (check.rows, check.first_id, check.last_id, check.head) == (4, 1, 4, rows[-1].hash)


def test_an_empty_trail_is_intact():
    check = check_chain([])
    assert check.ok and check.rows == 0 and check.head is None


def test_an_edited_row_is_named():
    rows = chain(4)
    rows[2] = ChainRow(3, rows[2].prev_hash, rows[2].hash, b"\x01" * 32)  # content hashes differently now
    check = check_chain(rows)
    assert check.broken is not None and check.broken.id == 3 and check.broken.reason.startswith("edited")
    assert check.rows == 2


def test_a_deleted_row_is_named_by_the_row_after_it():
    rows = chain(5)
    del rows[2]
    broken = check_chain(rows).broken
    assert broken is not None and broken.id == 4 and "between 2 and 4 was deleted" in broken.reason


def test_deleted_first_rows_are_seen_by_the_genesis():
    broken = check_chain(chain(5)[2:]).broken
    assert broken is not None and broken.id == 3 and "the rows before it were deleted" in broken.reason


def test_a_row_inserted_without_the_trigger_is_not_chained():
    rows = [*chain(3), ChainRow(4, None, None, b"\x02" * 32)]
    broken = check_chain(rows).broken
    assert broken is not None and broken.id == 4 and "not chained" in broken.reason


def test_an_anchor_catches_the_tail_deleted_and_a_rewritten_past():
    rows = chain(5)
    anchor = Anchor(5, rows[4].hash)
    assert check_chain(rows, anchor).ok
    assert check_chain(rows[:4]).ok  # the limit: a shorter chain is a valid chain
    gone = check_chain(rows[:4], anchor).broken
    assert gone is not None and gone.id == 5 and "anchor row is gone" in gone.reason
    rewritten = check_chain(rows, Anchor(5, b"\x03" * 32)).broken
    assert rewritten is not None and rewritten.id == 5 and "not the anchor's" in rewritten.reason


def test_an_anchor_reads_as_verify_prints_the_head():
    digest = bytes(range(32))
    assert Anchor.parse(f"42:{digest.hex()}") == Anchor(42, digest)
    for bad in ("42", "x:00", f"42:{digest.hex()[:-2]}", "42:zz"):
        with pytest.raises(ValueError, match="ID:HASH"):
            Anchor.parse(bad)


def test_roles_that_could_change_the_trail_are_warned_about():
    base = {"role": "r", "superuser": False, "owner": False, "may_change": False, "disabled": []}
    assert role_warnings(base) == []
    assert "superuser" in role_warnings({**base, "superuser": True, "owner": True})[0]
    assert "owns guardian_audit" in role_warnings({**base, "owner": True})[0]
    assert "UPDATE, DELETE or TRUNCATE" in role_warnings({**base, "may_change": True})[0]
    assert "guardian_audit_chain" in role_warnings({**base, "disabled": ["guardian_audit_chain"]})[0]
