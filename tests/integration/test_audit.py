"""The audit trail against the real services: each audited command leaves its row, the application's role
cannot change the trail, and `guardian audit verify` finds an edited or deleted row.

Commands that write to the stack's own trail are told apart by their target (a fresh topic, silence id
or owner) and by the ids after the test began. Tests that tamper with rows use a database of their
own, so the stack's trail stays intact.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from confluent_kafka import Producer

from guardian.settings import Settings
from guardian.sinks import audit
from guardian.sinks.migrations import apply_migrations, migration_files
from guardian.sinks.storage import TIMESCALEDB, mode_by_rule
from tests.integration.helpers import GUARDIAN, ScratchDb, pg_fetchval, scratch_database
from tests.integration.helpers import fetch_rows as _fetch


def guardian(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GUARDIAN, *args], capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})}
    )


def rows_after(settings: Settings, first_id: int, action: str, target: str | None = None) -> list[dict]:
    rows = asyncio.run(
        _fetch(
            settings.postgres_dsn,
            "SELECT id, actor, action, target, status, detail, duration_s, hash FROM guardian_audit"
            " WHERE id > $1 AND action = $2 AND ($3::text IS NULL OR target = $3) ORDER BY id",
            first_id,
            action,
            target,
        )
    )
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


def last_id(settings: Settings) -> int:
    return int(pg_fetchval(settings.postgres_dsn, "SELECT coalesce(max(id), 0) FROM guardian_audit"))  # type: ignore[arg-type]


def assert_operator_row(row: dict) -> None:
    """Who (the OS user at this host), how long, and chained."""
    assert row["actor"] == audit.operator()
    assert row["duration_s"] is not None and row["duration_s"] >= 0
    assert row["hash"] is not None and len(row["hash"]) == 32


# --- each audited command leaves its row ---------------------------------------------------------


def test_dlq_replay_is_audited_with_what_it_sent_and_when_it_had_nothing(settings: Settings, new_topic):
    dlq_topic, events_topic = new_topic("audit-dlq", partitions=1), new_topic("audit-events", partitions=1)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for value in (b"dead-1", b"dead-2"):
        producer.produce(dlq_topic, value, b"key")
    assert producer.flush(30) == 0
    env = {
        "GUARDIAN_DLQ_TOPIC": dlq_topic,
        "GUARDIAN_EVENTS_TOPIC": events_topic,
        "GUARDIAN_WORKER_GROUP": f"test-audit-{uuid.uuid4().hex[:8]}",  # a replay group of its own
    }
    before = last_id(settings)
    target = f"{dlq_topic} -> {events_topic}"

    replayed = guardian("dlq", "replay", "--yes", env=env)
    assert replayed.returncode == 0 and "re-submitted 2 record(s)" in replayed.stdout, replayed.stderr
    again = guardian("dlq", "replay", "--yes", env=env)
    assert again.returncode == 0 and "nothing to replay" in again.stdout, again.stderr

    first, second = rows_after(settings, before, "dlq replay", target)  # exactly one row each
    assert first["status"] == audit.OK and second["status"] == audit.OK
    assert first["detail"]["params"] == {"yes": True}
    assert first["detail"]["outcome"] == {"pending": 2, "sent": 2, "offsets": {"0": [0, 1]}}
    assert second["detail"]["outcome"] == {"pending": 0, "sent": 0, "offsets": {}}
    assert_operator_row(first)
    assert_operator_row(second)


def test_silence_and_unsilence_are_audited_and_a_failed_unsilence_too(settings: Settings):
    rule = f"audit-test-{uuid.uuid4().hex[:8]}"  # matches no alert
    before = last_id(settings)
    silenced = guardian("alerts", "silence", f"rule={rule}", "--for", "5m", "--comment", "audit test")
    assert silenced.returncode == 0, silenced.stderr
    silence_id = silenced.stdout.split()[1]
    assert guardian("alerts", "unsilence", silence_id).returncode == 0
    assert guardian("alerts", "unsilence", silence_id).returncode != 0  # gone already

    silence = rows_after(settings, before, "alerts silence", silence_id)
    unsilence = rows_after(settings, before, "alerts unsilence", silence_id)
    assert len(silence) == 1 and len(unsilence) == 2
    assert silence[0]["status"] == audit.OK
    assert silence[0]["detail"]["params"] == {"matchers": {"rule": rule}, "for": "5m", "comment": "audit test"}
    assert "until" in silence[0]["detail"]["outcome"]
    assert unsilence[0]["status"] == audit.OK
    assert unsilence[0]["detail"]["outcome"]["removed"]["matchers"] == {"rule": rule}
    assert unsilence[1]["status"] == audit.FAILED and "no silence" in unsilence[1]["detail"]["error"]
    for row in silence + unsilence:
        assert_operator_row(row)


def test_stack_init_is_audited_with_what_it_did(settings: Settings):
    before = last_id(settings)
    result = guardian("stack", "init")
    assert result.returncode == 0, result.stderr
    [row] = rows_after(settings, before, "stack init")
    assert row["status"] == audit.OK
    assert row["target"] == settings.postgres_admin_dsn.rsplit("@", 1)[-1]
    assert row["detail"]["params"]["retention_days"] == settings.retention_days
    assert isinstance(row["detail"]["outcome"]["actions"], list)
    assert_operator_row(row)


def test_stack_down_writes_its_row_before_postgres_would_stop(settings: Settings, tmp_path):
    """A stack dir where nothing runs: nothing is stopped, and the row still names what `down` did."""
    before = last_id(settings)
    result = guardian("stack", "down", env={"GUARDIAN_STACK_DIR": str(tmp_path / "stack")})
    assert result.returncode == 0, result.stderr
    [row] = rows_after(settings, before, "stack down")
    assert row["detail"]["params"] == {"services": ["kafka", "redis", "postgres"]}
    assert row["detail"]["outcome"]["services"] == {
        "kafka": "was not running",
        "redis": "was not running",
        "postgres": "stopping after this row",
    }
    assert_operator_row(row)


def test_forgetting_checkpoints_is_audited(settings: Settings):
    owner = f"FLEET/audit-{uuid.uuid4().hex[:8]}"
    before = last_id(settings)
    result = guardian("recover", "checkpoints", "--forget", owner)
    assert result.returncode == 0, result.stderr
    [row] = rows_after(settings, before, "recover checkpoints --forget", owner)
    assert row["detail"]["outcome"] == {"keys": []}
    assert_operator_row(row)


# --- append-only and hash-chained, in a database of its own -------------------------------------


@pytest.fixture
def audit_db(settings: Settings) -> Iterator[ScratchDb]:
    """A fresh database with the schema and an application role that is not the owner."""
    with scratch_database(settings, "guardian_audit") as db:
        yield db


def _append(db: ScratchDb, count: int, actor: str = "tester@host", action: str = "test op") -> list[int]:
    async def go() -> list[int]:
        for i in range(count):
            assert await audit.record(db.app, action, target=f"t{i}", detail={"i": i}, actor=actor, duration_s=0.25)
        return [r["id"] for r in await _fetch(db.app, "SELECT id FROM guardian_audit ORDER BY id")]

    return asyncio.run(go())


def _as_owner_without_triggers(db: ScratchDb, statement: str) -> None:
    """What someone with the owner's role (or a superuser) could do: switch the guards off and change rows."""
    asyncio.run(_fetch(db.admin, "ALTER TABLE guardian_audit DISABLE TRIGGER USER"))
    try:
        asyncio.run(_fetch(db.admin, statement))
    finally:
        asyncio.run(_fetch(db.admin, "ALTER TABLE guardian_audit ENABLE TRIGGER USER"))


def test_the_application_role_cannot_update_delete_or_truncate_and_neither_can_the_owner_unguarded(
    audit_db: ScratchDb,
):
    [row_id] = _append(audit_db, 1)
    for statement in (
        f"UPDATE guardian_audit SET detail = '{{}}' WHERE id = {row_id}",
        f"DELETE FROM guardian_audit WHERE id = {row_id}",
        "TRUNCATE guardian_audit",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            asyncio.run(_fetch(audit_db.app, statement))
        with pytest.raises(asyncpg.RaiseError, match="guardian_audit is append-only"):
            asyncio.run(_fetch(audit_db.admin, statement))
    # Nor can the application forge the chain's columns: the trigger sets them.
    asyncio.run(
        _fetch(
            audit_db.app,
            "INSERT INTO guardian_audit (id, at, actor, action, prev_hash, hash) VALUES"
            " (1000000, '2000-01-01', 'forger', 'x', '\\x00', '\\x00')",
        )
    )
    [forged] = asyncio.run(_fetch(audit_db.app, "SELECT id, at, hash FROM guardian_audit WHERE actor = 'forger'"))
    assert forged["id"] == row_id + 1 and forged["at"].year > 2000 and len(forged["hash"]) == 32
    assert guardian("audit", "verify", env=audit_db.env()).returncode == 0


def test_an_edited_row_makes_verify_fail_naming_it(audit_db: ScratchDb):
    ids = _append(audit_db, 5)
    clean = guardian("audit", "verify", env=audit_db.env())
    assert clean.returncode == 0 and "5 row(s)" in clean.stdout, clean.stderr
    assert "warning" not in clean.stderr  # the application's role cannot change the trail

    _as_owner_without_triggers(audit_db, f"""UPDATE guardian_audit SET detail = '{{"i": 99}}' WHERE id = {ids[2]}""")

    broken = guardian("audit", "verify", env=audit_db.env())
    assert broken.returncode == 1
    assert f"BROKEN at row {ids[2]}: edited" in broken.stderr, broken.stderr


def test_a_deleted_middle_row_makes_verify_fail_at_the_row_after_it(audit_db: ScratchDb):
    ids = _append(audit_db, 5)
    _as_owner_without_triggers(audit_db, f"DELETE FROM guardian_audit WHERE id = {ids[2]}")
    broken = guardian("audit", "verify", env=audit_db.env())
    assert broken.returncode == 1
    assert f"BROKEN at row {ids[3]}: prev_hash does not match row {ids[1]}'s hash" in broken.stderr, broken.stderr
    assert "deleted" in broken.stderr


def test_deleting_the_newest_rows_needs_an_anchor_to_show(audit_db: ScratchDb):
    """The documented limit: a chain cut short at its end is still a valid chain."""
    ids = _append(audit_db, 4)
    clean = guardian("audit", "verify", env=audit_db.env())
    head = next(line.split()[1] for line in clean.stdout.splitlines() if line.startswith("head "))
    assert head.startswith(f"{ids[-1]}:")
    assert guardian("audit", "verify", "--anchor", head, env=audit_db.env()).returncode == 0

    _as_owner_without_triggers(audit_db, f"DELETE FROM guardian_audit WHERE id = {ids[-1]}")

    assert guardian("audit", "verify", env=audit_db.env()).returncode == 0
    anchored = guardian("audit", "verify", "--anchor", head, env=audit_db.env())
    assert anchored.returncode == 1 and f"BROKEN at row {ids[-1]}: the anchor row is gone" in anchored.stderr


def test_concurrent_appends_keep_one_valid_chain(audit_db: ScratchDb):
    async def many() -> list[bool]:
        return await asyncio.gather(
            *(audit.record(audit_db.app, "parallel", target=str(i), actor=f"client-{i}") for i in range(50))
        )

    assert all(asyncio.run(many()))
    rows = asyncio.run(_fetch(audit_db.app, "SELECT id, at, target FROM guardian_audit ORDER BY id"))
    assert sorted(int(r["target"]) for r in rows) == list(range(50))
    assert all(a["at"] <= b["at"] for a, b in itertools.pairwise(rows))  # time follows the chain's order
    result = guardian("audit", "verify", env=audit_db.env())
    assert result.returncode == 0 and "50 row(s)" in result.stdout, result.stderr


def test_one_role_for_both_is_warned_about(audit_db: ScratchDb):
    _append(audit_db, 1)
    result = guardian("audit", "verify", env={"GUARDIAN_POSTGRES_DSN": audit_db.admin})
    assert result.returncode == 0
    assert "warning: role" in result.stderr and "guardian_audit" in result.stderr


def test_audit_list_filters_by_actor_action_and_time(audit_db: ScratchDb):
    _append(audit_db, 2, actor="alice@desk-1", action="dlq replay")
    _append(audit_db, 3, actor="bob@desk-2", action="alerts silence")

    def listed(*args: str) -> list[dict]:
        result = guardian("audit", "list", "--json", *args, env=audit_db.env())
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert len(listed()) == 5
    alice = listed("--actor", "alice")
    assert len(alice) == 2 and {r["action"] for r in alice} == {"dlq replay"}
    assert [r["actor"] for r in listed("--action", "silence", "--limit", "2")] == ["bob@desk-2"] * 2
    newest = listed("--since", "1h")
    assert [r["id"] for r in newest] == sorted((r["id"] for r in newest), reverse=True)  # newest first
    assert newest[0]["duration_s"] == 0.25 and newest[0]["detail"] == {"i": 2}
    assert listed("--since", "2999-01-01") == []
    table = guardian("audit", "list", "--actor", "bob", env=audit_db.env())
    assert table.stdout.count("alerts silence") == 3 and "bob@desk-2" in table.stdout


def test_rows_written_before_the_chain_are_chained_by_the_migration(settings: Settings):
    """An existing trail: its rows get hashes in id order, and record()'s old detail.duration_s moves
    to its column."""

    async def up_to_0003(db: ScratchDb) -> None:
        conn = await asyncpg.connect(db.admin)
        try:
            timescale = await mode_by_rule(conn) == TIMESCALEDB
            await conn.execute("SELECT set_config('guardian.use_timescaledb', $1, false)", str(timescale).lower())
            await conn.execute(
                "CREATE TABLE guardian_schema_migrations (version text PRIMARY KEY, applied_at timestamptz"
                " NOT NULL DEFAULT now())"
            )
            for version, sql in migration_files():
                if version < "0004":
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO guardian_schema_migrations (version) VALUES ($1)", version)
            await conn.executemany(
                "INSERT INTO guardian_audit (actor, action, status, detail) VALUES ($1, $2, $3, $4)",
                [("old@h", "recover hot-view", 0, '{"duration_s": 1.5, "source": "checkpoint"}'),
                 ("token:abc", "GET /v1/events", 200, "{}")],
            )  # fmt: skip
        finally:
            await conn.close()

    with scratch_database(settings, "guardian_audit", migrate=False) as db:
        asyncio.run(up_to_0003(db))
        assert asyncio.run(apply_migrations(db.admin)) == [v for v, _ in migration_files() if v >= "0004"]
        rows = asyncio.run(_fetch(db.admin, "SELECT duration_s, detail FROM guardian_audit ORDER BY id"))
        assert [(r["duration_s"], json.loads(r["detail"])) for r in rows] == [
            (1.5, {"source": "checkpoint"}),
            (None, {}),
        ]
        result = guardian("audit", "verify", env={"GUARDIAN_POSTGRES_DSN": db.admin})
        assert result.returncode == 0 and "2 row(s)" in result.stdout, result.stderr


def test_a_hot_view_rebuild_records_its_duration(settings: Settings):
    """The recovery action already audited by rebuild.py: now with its duration in the column."""
    before = last_id(settings)
    result = guardian("recover", "hot-view", "--quiet", "--reason", "audit test")
    assert result.returncode == 0, result.stderr
    [row] = rows_after(settings, before, "recover hot-view")  # written before the command returned
    assert row["detail"]["reason"] == "audit test" and row["duration_s"] > 0
