"""The Faust app of the worker fleet: `guardian worker` or `faust -A stream_processors.app worker`.

One agent consumes `guardian.events.v1` in batches (`take_events`): decode each record,
send the undecodable ones to the DLQ, write the batch to PostgreSQL and to the Redis hot
view (each retried until it succeeds), and only then let Faust acknowledge the batch.

How offsets get committed: `Stream.take_events()` turns Faust's automatic acks off and
acks a batch's events itself when the agent asks for the next batch, i.e. after this
agent's body for the batch returned. Faust's consumer commits, every
`broker_commit_interval`, the highest offset per partition below which every message has
been acked. So an offset is committed only after every sink wrote the events it covers,
and a crash before that re-delivers them — harmless, because both sinks are idempotent.
Workers sharing the app id form one consumer group; partitions rebalance as they come
and go.
"""

from __future__ import annotations

import asyncio
import time

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guardian.logs import get_logger
from guardian.settings import get_settings
from schemas.codec import EventCodec
from schemas.errors import CodecError
from sinks.base import Sink, StoredEvent, write_with_retry
from sinks.postgres import PostgresSink
from sinks.redis_hot_view import RedisHotView
from stream_processors import metrics
from stream_processors.dlq import dlq_headers

log = get_logger(__name__)
settings = get_settings()

app = faust.App(
    settings.worker_group,
    broker=f"kafka://{settings.kafka_bootstrap}",
    value_serializer="raw",
    key_serializer="raw",
    web_port=settings.worker_web_port,
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    datadir=str(settings.worker_data_dir),
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=0.5,
    producer_acks=-1,
    topic_disable_leader=True,
    stream_wait_empty=False,
)

events_topic = app.topic(settings.events_topic, value_serializer="raw", key_serializer="raw")
dlq_topic = app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw")

codec = EventCodec(registry_url=settings.schema_registry_url)
postgres = PostgresSink(settings.postgres_dsn)
hot_view = RedisHotView(settings.redis_url)
SINKS = (postgres, hot_view)
BATCH_MAX = 2000
BATCH_WITHIN_S = 0.02


STORES_DOWN: set[str] = set()


def _store_down(name: str, down: bool) -> None:
    (STORES_DOWN.add if down else STORES_DOWN.discard)(name)
    metrics.STORE_DOWN.labels(name).set(1 if down else 0)


async def _to_dlq(raw: bytes, key: bytes | None, error: Exception, partition: int, offset: int) -> asyncio.Future:
    metrics.DLQ.labels(type(error).__name__).inc()
    return await dlq_topic.send(
        key=key, value=raw, headers=dlq_headers(error, settings.events_topic, partition, offset)
    )


async def _write_timed(sink: Sink, batch: list[StoredEvent]) -> None:
    began = time.perf_counter()
    await write_with_retry(sink, batch, on_down=_store_down)
    metrics.SINK_SECONDS.labels(sink.name).observe(time.perf_counter() - began)


@app.agent(events_topic)
async def ingest(stream: faust.StreamT) -> None:
    async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
        decoded: list[StoredEvent] = []
        dead_letters = []
        for event in batch:
            message = event.message
            try:
                decoded.append(StoredEvent(codec.decode(message.value), message.partition, message.offset))
            except CodecError as error:
                dead_letters.append(await _to_dlq(message.value, message.key, error, message.partition, message.offset))
        metrics.BATCH_SIZE.observe(len(batch))
        # Both stores at once (they are independent); the batch is acknowledged only after both.
        await asyncio.gather(*(_write_timed(sink, decoded) for sink in SINKS))
        if dead_letters:  # the DLQ copy must be in Kafka before the originals are acknowledged
            await asyncio.gather(*dead_letters)
        now_us = time.time_ns() // 1000
        for stored in decoded:
            metrics.EVENT_LAG.observe(max(0, now_us - stored.event["event_time"]) / 1e6)
        metrics.EVENTS.labels("ingest").inc(len(batch))


async def _maintain_partitions() -> None:
    try:
        for action in await postgres.ensure_partitions(settings.retention_days):
            log.info("partition maintenance", action=action)
    except Exception as exc:  # PostgreSQL down: the default partition still takes rows; retried hourly
        log.warning("partition maintenance failed", error=repr(exc))


@app.task
async def prepare_database() -> None:
    """Migrations (idempotent, advisory-locked) and partitions ahead, once at start."""
    from sinks.migrations import apply_migrations

    try:
        await apply_migrations(settings.postgres_dsn)
    except Exception as exc:  # the sink retries its writes; the worker must not die for this
        log.warning("could not apply migrations at start", error=repr(exc))
    await _maintain_partitions()


@app.timer(interval=3600.0)
async def maintain_partitions() -> None:
    await _maintain_partitions()


@app.page("/metrics")
async def prometheus_metrics(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    # aiohttp refuses a charset inside content_type; Prometheus' text format is UTF-8 anyway.
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4")


@app.page("/healthz")
async def healthz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    # Healthy while a store is down: the worker is doing its job (retrying), restarting it would not help.
    return web.json({"status": "ok", "stores_down": sorted(STORES_DOWN)})
