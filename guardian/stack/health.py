"""Health probes of the three services, used by `guardian stack status` and the test fixtures."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from guardian.kafka_config import ErrorTrap, client_config
from guardian.settings import Settings


@dataclass(frozen=True)
class Probe:
    name: str
    address: str
    healthy: bool
    detail: str
    reachable: bool = True  # unhealthy but answering (topics missing, a storage job failing): degraded, not down

    @property
    def health(self) -> str:
        return "healthy" if self.healthy else "DEGRADED" if self.reachable else "DOWN"


def probe_kafka(settings: Settings, timeout: float = 5.0) -> Probe:
    from confluent_kafka.admin import AdminClient

    trap = ErrorTrap()
    admin = AdminClient(client_config(settings, {"log_level": 0, "error_cb": trap}))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException: broker unreachable, or refusing us
        return Probe(
            "kafka", settings.kafka_bootstrap, False, f"unreachable ({trap.reason(admin, exc)})", reachable=False
        )
    topics = [settings.events_topic, settings.alerts_topic, settings.dlq_topic, settings.checkpoints_topic]
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        return Probe("kafka", settings.kafka_bootstrap, False, f"up, but topics missing: {', '.join(missing)}")
    partitions = len(metadata.topics[settings.events_topic].partitions)
    return Probe("kafka", settings.kafka_bootstrap, True, f"{len(metadata.brokers)} broker, {partitions} partitions")


def probe_redis(settings: Settings, timeout: float = 3.0) -> Probe:
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        info = client.info("server")
    except redis.RedisError as exc:
        return Probe("redis", settings.redis_url, False, f"unreachable ({exc})", reachable=False)
    finally:
        client.close()
    return Probe("redis", settings.redis_url, True, f"redis {info.get('redis_version')}")


async def _postgres_facts(dsn: str, timeout: float) -> tuple[str, str | None, str, list]:
    import asyncpg

    from guardian.sinks.storage import job_health, mode_by_rule, recorded_mode

    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        version = await conn.fetchval("SHOW server_version")
        mode = await recorded_mode(conn)
        jobs = await job_health(conn, mode) if mode else []
        return version, mode, await mode_by_rule(conn), jobs
    finally:
        await conn.close()


async def _app_role_problem(dsn: str, timeout: float) -> str | None:
    """Why the application role cannot log in and read the schema; None when it can."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
        try:
            await conn.fetchval("SELECT count(*) FROM guardian_meta")
        finally:
            await conn.close()
    except Exception as exc:
        return f"the application role cannot use the database ({exc}): run `guardian stack init`"
    return None


def probe_postgres(settings: Settings, timeout: float = 5.0) -> Probe:
    """Healthy: reachable, schema applied, the application role able to log in, no storage job failing.
    The detail names the mode and each storage job's last success (and failure). The storage facts are
    read as the schema's owner (storage upkeep's role), the login check as the application role."""
    from guardian.sinks.storage import NATIVE, TIMESCALEDB

    address = settings.postgres_dsn.rsplit("@", 1)[-1]  # never print a password
    try:
        version, mode, rule_says, jobs = asyncio.run(_postgres_facts(settings.postgres_admin_dsn, timeout))
    except Exception as exc:
        return Probe("postgres", address, False, f"unreachable ({exc})", reachable=False)
    detail = f"postgres {version}, storage mode: {mode or 'schema not applied'}"
    if mode == NATIVE and rule_says == TIMESCALEDB:
        detail += " (TimescaleDB is usable now: docs/storage.md says how to move)"
    now = datetime.now(UTC)
    detail += "".join(f"; {job.describe(now)}" for job in jobs)
    if mode and not jobs:
        detail += "; storage jobs: none ran yet"
    app_problem = None
    if mode and settings.postgres_dsn != settings.postgres_admin_dsn:
        app_problem = asyncio.run(_app_role_problem(settings.postgres_dsn, timeout))
        detail += f"; {app_problem}" if app_problem else ""
    healthy = mode in (TIMESCALEDB, NATIVE) and not any(job.failing for job in jobs) and app_problem is None
    return Probe("postgres", address, healthy, detail)


def probe_all(settings: Settings) -> list[Probe]:
    return [probe_kafka(settings), probe_redis(settings), probe_postgres(settings)]
