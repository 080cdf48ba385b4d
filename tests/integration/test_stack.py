"""The local stack as its users see it: the `guardian stack` CLI against the real services."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from guardian.cpus import threads_named
from guardian.settings import Settings
from guardian.stack.kafka_service import JIT_THREAD_NAME
from guardian.stack.process import free_port

GUARDIAN = str(Path(sys.executable).with_name("guardian"))


def guardian(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GUARDIAN, *args], capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})}
    )


def test_status_reports_every_service_healthy(settings: Settings):
    result = guardian("stack", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("kafka", "redis", "postgres"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(service))
        assert "healthy" in line
    assert "storage mode:" in result.stdout


def test_second_up_changes_nothing(settings: Settings):
    before = guardian("stack", "status").stdout
    result = guardian("stack", "up")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == 3
    assert "created topic" not in result.stdout
    assert guardian("stack", "status").stdout == before  # same pids, same health


def test_events_topic_has_partitions_and_retention_of_the_replay_window(settings: Settings):
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[settings.events_topic].partitions) == settings.events_partitions == 12
    assert settings.alerts_topic in topics and settings.dlq_topic in topics
    resource = ConfigResource(ResourceType.TOPIC, settings.events_topic)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert int(config["retention.ms"].value) == 7 * 24 * 3600 * 1000


def test_the_local_brokers_jit_compiler_threads_run_at_idle_priority(settings: Settings):
    """They share the host's cores with the pipeline; at idle priority they compile on spare CPU only."""
    pid = int((settings.stack_dir / "run" / "kafka.pid").read_text().split()[0])
    policies = {name: os.sched_getscheduler(tid) for tid, name in threads_named(pid, JIT_THREAD_NAME)}
    assert policies, "no JIT compiler threads found in the broker"
    assert set(policies.values()) == {os.SCHED_IDLE}, policies


def test_a_stopped_service_shows_down_and_comes_back(settings: Settings):
    assert guardian("stack", "stop", "redis").returncode == 0
    try:
        status = guardian("stack", "status")
        assert status.returncode == 1
        assert any(line.startswith("redis") and "DOWN" in line for line in status.stdout.splitlines())
    finally:
        started = guardian("stack", "start", "redis")
    assert started.returncode == 0, started.stderr
    assert guardian("stack", "status").returncode == 0


def test_port_in_use_is_a_clear_error_and_starts_nothing(tmp_path, settings: Settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        result = guardian("stack", "up", env={"GUARDIAN_STACK_DIR": str(tmp_path), "GUARDIAN_REDIS_PORT": str(busy)})
    assert result.returncode == 2
    assert f"port {busy}" in result.stderr and "GUARDIAN_REDIS_PORT" in result.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_missing_java_is_a_clear_error(tmp_path, settings: Settings):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ports = {f"GUARDIAN_{name}_PORT": str(free_port()) for name in ("REDIS", "POSTGRES", "KAFKA", "KAFKA_CONTROLLER")}
    env = {"GUARDIAN_STACK_DIR": str(tmp_path / "stack"), "PATH": str(bin_dir), **ports}
    result = guardian("stack", "up", env=env)
    assert result.returncode == 2
    assert "Java is not installed" in result.stderr


async def _storage_mode(dsn: str) -> tuple[str, bool]:
    conn = await asyncpg.connect(dsn)
    try:
        mode = await conn.fetchval("SELECT value FROM guardian_meta WHERE key = 'storage_mode'")
        has_timescale = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        )
        return mode, has_timescale
    finally:
        await conn.close()


def test_storage_mode_matches_what_is_installed(settings: Settings):
    mode, has_timescale = asyncio.run(_storage_mode(settings.postgres_dsn))
    assert mode == ("timescaledb" if has_timescale else "native-partitioning")


def test_timescaledb_hypertable_with_policies(settings: Settings):
    _, has_timescale = asyncio.run(_storage_mode(settings.postgres_dsn))
    if not has_timescale:
        pytest.skip("TimescaleDB extension is not installed on this PostgreSQL; native partitioning is in use")

    async def check() -> None:
        conn = await asyncpg.connect(settings.postgres_dsn)
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'guardian_events'"
            )
            jobs = {r["proc_name"] for r in await conn.fetch("SELECT proc_name FROM timescaledb_information.jobs")}
            assert {"policy_compression", "policy_retention"} <= jobs
        finally:
            await conn.close()

    asyncio.run(check())


def test_native_partitions_are_created_ahead_and_adopt_default_rows(settings: Settings):
    mode, _ = asyncio.run(_storage_mode(settings.postgres_dsn))
    if mode != "native-partitioning":
        pytest.skip("TimescaleDB mode: hypertable policies manage chunks")

    async def check() -> None:
        conn = await asyncpg.connect(settings.postgres_dsn)
        try:
            # A row on a day past every daily partition lands in the default partition...
            days_ahead = await conn.fetchval(
                "SELECT greatest(5, coalesce(max(to_date(substring(relname from '[0-9]{8}$'), 'YYYYMMDD')),"
                " current_date) - current_date + 1) FROM pg_class WHERE relname ~ '^guardian_events_[0-9]{8}$'"
            )
            event_id = await conn.fetchval(
                "INSERT INTO guardian_events (event_time, event_id, producer_id, sequence, host, symbol, detector,"
                " severity, schema_version, payload_type, payload) VALUES (current_date + $1::int + interval '1 hour',"
                " gen_random_uuid(), 'stack-test', 1, 'h', 'TEST', 'DRIFT_MONITOR', 'INFO', 1, 'Drift', '{}')"
                " RETURNING event_id",
                days_ahead,
            )
            where = "FROM guardian_events_default WHERE event_id = $1"
            assert await conn.fetchval(f"SELECT count(*) {where}", event_id) == 1
            # ...and moves into its own partition when that partition is created: nothing lost.
            created = await conn.fetch("SELECT * FROM guardian_ensure_partitions($1, 7)", days_ahead)
            assert any(r["action"] == "created" for r in created)
            assert await conn.fetchval(f"SELECT count(*) {where}", event_id) == 0
            located = await conn.fetchval(
                "SELECT tableoid::regclass::text FROM guardian_events WHERE event_id = $1", event_id
            )
            assert located.startswith("guardian_events_2")
            await conn.execute("DELETE FROM guardian_events WHERE event_id = $1", event_id)
            today = await conn.fetchval("SELECT to_char(current_date, 'YYYYMMDD')")
            assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"guardian_events_{today}")
        finally:
            await conn.close()

    asyncio.run(check())
