"""The local stack as its users see it: the `guardian stack` CLI against the real services."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
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
    assert "applied migrations" not in result.stdout and "->" not in result.stdout  # schema and policy as they were
    # Same pids, same health; only the storage jobs' "last success ... ago" moves on.
    assert _without_ages(guardian("stack", "status").stdout) == _without_ages(before)


def test_status_shows_no_local_pid_beside_another_servers_address(settings: Settings):
    status = guardian("stack", "status", env={"GUARDIAN_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    assert status.returncode == 1
    [kafka] = [line.split() for line in status.stdout.splitlines() if line.startswith("kafka")]
    assert kafka[2:4] == ["-", "DOWN"], kafka
    [redis] = [line.split() for line in status.stdout.splitlines() if line.startswith("redis")]
    assert redis[2].isdigit()  # the local one, still


def test_init_without_kafka_does_the_database_and_says_what_is_missing(settings: Settings):
    result = guardian("stack", "init", env={"GUARDIAN_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 2
    assert "the database is ready, but Kafka at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _without_ages(status: str) -> str:
    return re.sub(r"\d+(\.\d+)? (s|min|h) ago", "<age>", status)


def test_events_topic_has_partitions_and_retention_of_the_replay_window(settings: Settings):
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[settings.events_topic].partitions) == settings.events_partitions == 12
    assert settings.alerts_topic in topics and settings.dlq_topic in topics
    resource = ConfigResource(ResourceType.TOPIC, settings.events_topic)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert int(config["retention.ms"].value) == 7 * 24 * 3600 * 1000


def test_init_sets_retention_and_segments_of_topics_made_before(settings: Settings, new_topic):
    """A topic created earlier (or by hand) with Kafka's defaults gets the settings' retention and hourly
    segments from `guardian stack init`, which says so; a second init changes nothing."""
    names = {
        "GUARDIAN_EVENTS_TOPIC": new_topic(),
        "GUARDIAN_ALERTS_TOPIC": new_topic(),
        "GUARDIAN_DLQ_TOPIC": new_topic(),
    }
    env = {**names, "GUARDIAN_EVENTS_RETENTION_HOURS": "48"}
    first = guardian("stack", "init", env=env)
    assert first.returncode == 0, first.stderr
    assert f"topic {names['GUARDIAN_EVENTS_TOPIC']}: retention.ms 604800000 -> 172800000" in first.stdout
    assert "segment.ms 604800000 -> 3600000" in first.stdout
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, names["GUARDIAN_DLQ_TOPIC"])
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert (config["retention.ms"].value, config["segment.ms"].value) == ("172800000", "3600000")
    second = guardian("stack", "init", env=env)
    assert "topic " not in second.stdout


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


def test_timescaledb_hypertable_follows_the_settings(settings: Settings):
    """TimescaleDB mode only: policies as the settings say, no redundant index, compression explicit."""
    from guardian.sinks.storage import TIMESCALEDB, recorded_mode

    async def check() -> None:
        conn = await asyncpg.connect(settings.postgres_admin_dsn)
        try:
            if await recorded_mode(conn) != TIMESCALEDB:
                pytest.skip("the store is in native mode: TimescaleDB is not installed and preloaded here")
            jobs = {
                r["proc_name"]: r["age"]
                for r in await conn.fetch(
                    "SELECT proc_name, coalesce(config->>'drop_after', config->>'compress_after')::interval AS age"
                    " FROM timescaledb_information.jobs WHERE hypertable_name = 'guardian_events'"
                )
            }
            assert jobs["policy_retention"] == timedelta(days=settings.retention_days)
            assert jobs["policy_compression"] == timedelta(hours=settings.compress_after_hours)
            chunk = await conn.fetchval(
                "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'guardian_events'"
            )
            assert chunk == timedelta(hours=settings.chunk_hours)
            indexes = {
                r["indexname"]
                for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'guardian_events'")
            }
            assert "guardian_events_event_time_idx" not in indexes
        finally:
            await conn.close()

    asyncio.run(check())
