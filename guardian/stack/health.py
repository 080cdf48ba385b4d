"""Health probes of the three services, used by `guardian stack status` and the test fixtures."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from guardian.settings import Settings


@dataclass(frozen=True)
class Probe:
    name: str
    address: str
    healthy: bool
    detail: str


def probe_kafka(settings: Settings, timeout: float = 5.0) -> Probe:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException: broker unreachable
        return Probe("kafka", settings.kafka_bootstrap, False, f"unreachable ({exc})")
    topics = [settings.events_topic, settings.alerts_topic, settings.dlq_topic]
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
        return Probe("redis", settings.redis_url, False, f"unreachable ({exc})")
    finally:
        client.close()
    return Probe("redis", settings.redis_url, True, f"redis {info.get('redis_version')}")


async def _postgres_mode(dsn: str, timeout: float) -> tuple[str, str]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        version = await conn.fetchval("SHOW server_version")
        mode = (
            await conn.fetchval("SELECT value FROM guardian_meta WHERE key = 'storage_mode'")
            if await conn.fetchval("SELECT to_regclass('guardian_meta') IS NOT NULL")
            else None
        )
    finally:
        await conn.close()
    return version, mode or "schema not applied"


def probe_postgres(settings: Settings, timeout: float = 5.0) -> Probe:
    address = settings.postgres_dsn.rsplit("@", 1)[-1]  # never print a password
    try:
        version, mode = asyncio.run(_postgres_mode(settings.postgres_dsn, timeout))
    except Exception as exc:
        return Probe("postgres", address, False, f"unreachable ({exc})")
    healthy = mode in ("timescaledb", "native-partitioning")
    return Probe("postgres", address, healthy, f"postgres {version}, storage mode: {mode}")


def probe_all(settings: Settings) -> list[Probe]:
    return [probe_kafka(settings), probe_redis(settings), probe_postgres(settings)]
