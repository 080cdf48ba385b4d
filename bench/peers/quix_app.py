"""The Quix Streams peer: our events into PostgreSQL and the Redis hot view, as a Quix app.

Runs in a virtualenv of its own (bench/peers/quix_env.py: Quix Streams pins confluent-kafka below
ours), as `python -m bench.peers.quix_app TOPIC GROUP COMMIT_INTERVAL_S` from the repository root,
until SIGTERM. Written the way Quix's docs recommend: an Application, a Topic with a Deserializer,
a StreamingDataFrame and sinks flushed at each checkpoint (offsets are committed after the sinks).
- decoding: our codec (schemas/codec.py) wrapped as a Quix `Deserializer`;
- PostgreSQL: Quix's own `PostgreSQLSink` into `guardian_events`, which can express our table and
  semantics (an existing table, `ON CONFLICT DO NOTHING`, no metadata columns, no schema updates);
- Redis: a custom `BatchingSink` running the hot view's script (sinks/redis_hot_view.py), because
  Quix's `RedisSink` only SETs one key per message and cannot express the sequence guard, the 24 h
  window and the minute counters.
"""

from __future__ import annotations

import sys
import time
from urllib.parse import urlsplit

import redis
from quixstreams import Application, message_context
from quixstreams.models.serializers import Deserializer
from quixstreams.sinks import BatchingSink, SinkBatch
from quixstreams.sinks.community.postgresql import PostgreSQLSink

from guardian.schemas.codec import EventCodec
from guardian.schemas.events import StoredEvent
from guardian.settings import get_settings
from guardian.sinks.postgres import micros_to_datetime
from guardian.sinks.redis_hot_view import APPLY_BATCH, TRIM_EVERY_S, script_args

CHUNK = 5000  # events per script call: the worker's BATCH_MAX


class GuardianAvroDeserializer(Deserializer):
    """Our codec (single-object or Confluent framing, schema-compiled reader) as a Quix deserializer."""

    def __init__(self) -> None:
        super().__init__()
        self._codec = EventCodec()

    def __call__(self, value: bytes, ctx) -> dict:
        return self._codec.decode(value)


class HotViewSink(BatchingSink):
    """The worker's Redis writes: one call of the hot view's script per chunk of a checkpoint's batch."""

    def __init__(self, url: str, recent_max: int, live_maxlen: int) -> None:
        super().__init__()
        self._url = url
        self._recent_max = recent_max
        self._live_maxlen = live_maxlen
        self._trimmed_at = 0.0

    def setup(self) -> None:
        self._client = redis.Redis.from_url(self._url, socket_timeout=5)
        self._script = self._client.register_script(APPLY_BATCH)

    def write(self, batch: SinkBatch) -> None:
        stored = [StoredEvent(item.value, batch.partition, item.offset) for item in batch]
        for start in range(0, len(stored), CHUNK):
            now = time.monotonic()
            trim = now - self._trimmed_at >= TRIM_EVERY_S
            if trim:
                self._trimmed_at = now
            keep = self._recent_max if trim else 0
            self._script(
                args=script_args(stored[start : start + CHUNK], time.time_ns() // 1000, keep, self._live_maxlen)
            )


def to_row(event: dict) -> dict:
    """The row the worker writes (sinks/postgres.py to_row), as the dict Quix's PostgreSQL sink takes."""
    context = message_context()
    payload_name, payload = event["payload"]
    return {
        "event_time": micros_to_datetime(event["event_time"]),
        "event_id": event["event_id"],
        "producer_id": event["producer_id"],
        "sequence": event["sequence"],
        "host": event["host"],
        "symbol": event["symbol"],
        "detector": event["detector"],
        "severity": event["severity"],
        "schema_version": event["schema_version"],
        "payload_type": payload_name.rsplit(".", 1)[-1],
        "payload": payload,  # a dict: the sink adapts it as JSON
        "kafka_partition": context.partition,
        "kafka_offset": context.offset,
    }


def main() -> None:
    topic_name, group, commit_interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    settings = get_settings()
    # The owner role: the sink's setup() runs CREATE SCHEMA IF NOT EXISTS, which needs CREATE on the database.
    dsn = urlsplit(settings.postgres_admin_dsn)
    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=commit_interval,
        loglevel="WARNING",
        use_changelog_topics=False,
    )
    topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer=GuardianAvroDeserializer())
    postgres = PostgreSQLSink(
        host=dsn.hostname or "127.0.0.1",
        port=dsn.port or 5432,
        dbname=dsn.path.lstrip("/"),
        user=dsn.username or "",
        password=dsn.password or "",
        table_name="guardian_events",
        schema_auto_update=False,
        on_conflict_do_nothing=True,
        include_metadata=False,
    )
    sdf = app.dataframe(topic)
    sdf.sink(HotViewSink(settings.redis_url, settings.hot_view_recent_max, settings.live_stream_maxlen))
    sdf.apply(to_row).sink(postgres)
    app.run()


if __name__ == "__main__":
    main()
