"""Stores of a benchmark's own: topics, a database and a Redis database nothing else uses, removed after."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from confluent_kafka.admin import AdminClient, NewTopic

from guardian.kafka_config import client_config
from guardian.schemas.checkpoint import TOPIC_CONFIG
from guardian.settings import Settings
from guardian.sinks.databases import create_database, drop_database, in_database


@contextmanager
def isolated(
    settings: Settings, label: str, redis_db_env: str = "GUARDIAN_BENCH_REDIS_DB", redis_db: int = 5
) -> Iterator[Settings]:
    """Settings whose events, alerts and checkpoints topics, database (owner's DSN for both roles) and Redis
    database (`redis_db_env`, default `redis_db`) are the benchmark's; all of them are gone afterwards."""
    suffix = uuid.uuid4().hex[:8]
    topics = {kind: f"bench.{label}.{kind}.{suffix}" for kind in ("events", "alerts", "ckpt")}
    admin = AdminClient(client_config(settings))
    created = [NewTopic(topics["events"], settings.events_partitions, 1), NewTopic(topics["alerts"], 3, 1),
               NewTopic(topics["ckpt"], 1, 1, config=TOPIC_CONFIG)]  # fmt: skip
    for future in admin.create_topics(created).values():
        future.result(timeout=30)
    name = f"guardian_bench_{label}_{suffix}"
    asyncio.run(create_database(settings.postgres_admin_dsn, name))
    database = int(os.environ.get(redis_db_env, str(redis_db)))
    bench = settings.model_copy(update={
        "events_topic": topics["events"], "alerts_topic": topics["alerts"], "checkpoints_topic": topics["ckpt"],
        "redis_url": settings.redis_url.rsplit("/", 1)[0] + f"/{database}",
        "postgres_dsn": in_database(settings.postgres_dsn, name),
        "postgres_admin_dsn": in_database(settings.postgres_admin_dsn, name),
    })  # fmt: skip
    redis.Redis.from_url(bench.redis_url).flushdb()
    try:
        yield bench
    finally:
        redis.Redis.from_url(bench.redis_url).flushdb()
        asyncio.run(drop_database(settings.postgres_admin_dsn, name))
        admin.delete_topics([t for t in admin.list_topics(timeout=10).topics if suffix in t])
