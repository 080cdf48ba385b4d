"""The history store's upkeep against a real PostgreSQL: retention, partitions, policy changes, job health.

Each test gets a database of its own on the stack's server (the schema applied by the migrations),
so changing the policy or breaking maintenance touches nothing else. Native mode runs here; the
TimescaleDB-only checks are in test_stack.py and skip where the extension is not usable.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import redis

from guardian.settings import Settings
from guardian.sinks.storage import NATIVE, NATIVE_JOB, StoragePolicy, job_health, mode_by_rule, recorded_mode, upkeep
from guardian.stream_processors.alerts.engine import fingerprint
from guardian.stream_processors.alerts.outputs import ACTIVE_SET, ALERT_KEY
from guardian.stream_processors.storage_watch import RULE
from tests.integration.helpers import GUARDIAN, WorkerProcess, scratch_database, wait_for
from tests.integration.helpers import fetch_rows as _fetch


def _run(coro):
    return asyncio.run(coro)


@pytest.fixture
def store_dsn(settings: Settings) -> Iterator[str]:
    """A fresh database with the schema applied, dropped afterwards."""
    with scratch_database(settings, "guardian_storage") as db:
        yield db.admin  # the schema's owner: upkeep drops and creates


@pytest.fixture
def native_dsn(store_dsn: str) -> str:
    """store_dsn, for checks of native mode's own maintenance."""
    if _run(_fetch(store_dsn, "SELECT value FROM guardian_meta WHERE key = 'storage_mode'"))[0][0] != NATIVE:
        pytest.skip("TimescaleDB mode: its policy jobs keep the chunks, checked in test_stack.py")
    return store_dsn


def _insert_spread(dsn: str, days: int, every: timedelta) -> int:
    """Rows from `days` ago to now, one per `every`, as a late replay writes them: straight into
    guardian_events (those before every partition land in the default partition)."""

    async def go() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(
                "WITH added AS (INSERT INTO guardian_events (event_time, event_id, producer_id, sequence, host,"
                " symbol, detector, severity, schema_version, payload_type, payload)"
                " SELECT t, gen_random_uuid(), 'storage-test', 1, 'h', 'S', 'DRIFT_MONITOR', 'INFO', 1, 'Drift', '{}'"
                " FROM generate_series(now() - $1::interval, now(), $2::interval) t RETURNING 1)"
                " SELECT count(*) FROM added",
                timedelta(days=days),
                every,
            )
        finally:
            await conn.close()

    return _run(go())


def test_the_schema_records_the_mode_the_rule_gives(settings: Settings):
    async def facts() -> tuple[str | None, str]:
        conn = await asyncpg.connect(settings.postgres_admin_dsn)  # the rule reads shared_preload_libraries
        try:
            return await recorded_mode(conn), await mode_by_rule(conn)
        finally:
            await conn.close()

    recorded, rule = _run(facts())
    assert recorded == rule


def test_no_row_or_partition_outlives_retention_and_the_default_partition_drains(native_dsn: str):
    store_dsn = native_dsn
    policy = StoragePolicy(retention=timedelta(days=3), chunk=timedelta(hours=6), compress_after=timedelta(days=1))
    _run(upkeep(store_dsn, policy))
    # 10 days of rows, one every 3 hours: more days than the retention, most before every partition.
    written = _insert_spread(store_dsn, days=10, every=timedelta(hours=3))
    assert written == 81
    in_default = _run(_fetch(store_dsn, "SELECT count(*) FROM guardian_events_default"))[0][0]
    assert in_default > 60

    actions = _run(upkeep(store_dsn, policy))

    assert any(a.startswith("pruned ") for a in actions), actions
    [(left_in_default, oldest, kept)] = _run(
        _fetch(
            store_dsn,
            "SELECT (SELECT count(*) FROM guardian_events_default), min(event_time), count(*) FROM guardian_events",
        )
    )
    assert left_in_default == 0
    # Whole chunks go: nothing older than retention + one chunk, nothing younger than retention lost.
    now = datetime.now(UTC)
    assert oldest >= now - policy.retention - policy.chunk
    younger = _run(
        _fetch(
            store_dsn, "SELECT count(*) FROM guardian_events WHERE event_time >= now() - $1::interval", policy.retention
        )
    )[0][0]
    assert younger >= 3 * 8  # one row every 3 h over 3 days
    assert kept < written
    partitions = _run(_fetch(store_dsn, "SELECT lower_bound, upper_bound FROM guardian_event_partitions"))
    assert all(upper > now - policy.retention for _, upper in partitions)
    assert max(upper for _, upper in partitions) >= now + policy.ahead
    assert {upper - lower for lower, upper in partitions} == {policy.chunk}


def test_policy_changes_are_applied_and_reported_once(native_dsn: str):
    store_dsn = native_dsn
    first = StoragePolicy(retention=timedelta(days=3), chunk=timedelta(hours=1), compress_after=timedelta(days=1))
    changed = StoragePolicy(retention=timedelta(days=2), chunk=timedelta(days=1), compress_after=timedelta(days=1))
    assert "retention: unset -> 3 days" in _run(upkeep(store_dsn, first))
    lines = _run(upkeep(store_dsn, changed))
    assert "retention: 3 days -> 2 days" in lines
    assert "chunk interval: 1 hour -> 1 day" in lines
    assert not any("->" in line for line in _run(upkeep(store_dsn, changed)))  # nothing left to change
    # Partitions made before stay; new ones follow the new width, with no gap and no overlap.
    bounds = _run(_fetch(store_dsn, "SELECT lower_bound, upper_bound FROM guardian_event_partitions ORDER BY 1"))
    assert {timedelta(hours=1), timedelta(days=1)} <= {upper - lower for lower, upper in bounds}
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
    assert bounds[-1][1] >= datetime.now(UTC) + changed.ahead


def _block_next_partition(dsn: str) -> str:
    """Break maintenance as a real incident would: the newest partition's name taken by a table that
    is not a partition, so the next run's CREATE TABLE fails."""
    [(name,)] = _run(_fetch(dsn, "SELECT name FROM guardian_event_partitions ORDER BY upper_bound DESC LIMIT 1"))
    _run(_fetch(dsn, f"DROP TABLE {name}"))
    _run(_fetch(dsn, f"CREATE TABLE {name} (x int)"))
    return name


def _status(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GUARDIAN, "stack", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GUARDIAN_POSTGRES_DSN": dsn},
    )


def test_a_failing_maintenance_shows_in_status_until_it_succeeds_again(native_dsn: str):
    store_dsn = native_dsn
    policy = StoragePolicy.from_settings(Settings())
    _run(upkeep(store_dsn, policy))
    assert _status(store_dsn).returncode == 0
    blocker = _block_next_partition(store_dsn)

    with pytest.raises(Exception, match="already exists"):
        _run(upkeep(store_dsn, policy))

    status = _status(store_dsn)
    assert status.returncode == 1, status.stdout
    [line] = [line for line in status.stdout.splitlines() if line.startswith("postgres")]
    assert "DEGRADED" in line and "FAILING" in line and "already exists" in line and NATIVE_JOB in line

    async def health() -> list:
        conn = await asyncpg.connect(store_dsn)
        try:
            return [job for job in await job_health(conn) if job.name == NATIVE_JOB]
        finally:
            await conn.close()

    [job] = _run(health())
    assert job.failing and job.last_success is not None and "already exists" in job.last_error
    _run(_fetch(store_dsn, f"DROP TABLE {blocker}"))
    _run(upkeep(store_dsn, policy))
    [job] = _run(health())
    assert not job.failing
    assert _status(store_dsn).returncode == 0


def test_a_failing_storage_job_is_a_p1_alert_in_the_worker_and_its_metrics(
    settings: Settings, native_dsn: str, new_topic, tmp_path
):
    store_dsn = native_dsn
    _run(upkeep(store_dsn, StoragePolicy.from_settings(settings)))
    blocker = _block_next_partition(store_dsn)
    client = redis.Redis.from_url(settings.redis_url)
    key = ALERT_KEY.format(fingerprint(RULE, {"job": NATIVE_JOB}))
    client.delete(key)
    client.srem(ACTIVE_SET, fingerprint(RULE, {"job": NATIVE_JOB}))
    topic = new_topic()
    env = {"GUARDIAN_POSTGRES_DSN": store_dsn}
    worker = WorkerProcess(topic, tmp_path, extra_env=env).start()
    try:
        alert = wait_for(lambda: client.get(key), 90, "the storage job alert in Redis")
        alert = json.loads(alert)
        assert (alert["severity"], alert["status"], alert["rule"]) == ("P1", "FIRING", RULE)
        assert "already exists" in alert["summary"]
        assert client.sismember(ACTIVE_SET, alert["fingerprint"])
        metrics = wait_for(lambda: _metrics(worker.port), 30, "the worker's metrics")
        assert f'guardian_storage_job_failing{{storage_job="{NATIVE_JOB}"}} 1.0' in metrics
        worker.stop()

        # Fixed, the next upkeep (here: the next worker start) resolves it.
        _run(_fetch(store_dsn, f"DROP TABLE {blocker}"))
        worker = WorkerProcess(topic, tmp_path, extra_env=env).start()
        resolved = wait_for(
            lambda: (raw := client.get(key)) and json.loads(raw)["status"] == "RESOLVED" and json.loads(raw),
            90,
            "the storage job alert resolved",
        )
        assert resolved["ends_at"] is not None
        assert not client.sismember(ACTIVE_SET, alert["fingerprint"])
    finally:
        worker.stop()
        client.delete(key)
        client.srem(ACTIVE_SET, fingerprint(RULE, {"job": NATIVE_JOB}))


def _metrics(port: int) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return text if "guardian_storage_job_failing" in text else None
