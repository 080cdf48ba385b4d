"""Re-drive offset ranges of the events topic through the stores, beside the live fleet.

The same decoding, storable-event rules and sinks as a worker (stream_processors/ingest.py), with
what makes a re-drive harmless while the fleet runs:
- no consumer group membership: the ranges are assigned, so the fleet's partitions never move;
- PostgreSQL inserts `ON CONFLICT DO NOTHING` (a row stored already stays as it is) and the hot view's
  script moves a key only forward (per producer sequence), so a re-drive never duplicates a row nor
  moves a key backwards;
- no alert evaluation: notifications belong to the live fleet, which saw these events already; a
  replay never re-sends one;
- events the fleet dead-lettered are dead-lettered again by the same rules, but only counted, not
  sent to the DLQ a second time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer

from guardian.kafka_config import client_config
from guardian.kafka_ranges import consume_ranges
from guardian.logs import get_logger
from guardian.schemas.codec import EventCodec
from guardian.schemas.errors import CodecError
from guardian.schemas.events import StoredEvent
from guardian.schemas.validation import EventRules, InvalidEventError
from guardian.settings import Settings
from guardian.sinks.base import PermanentWriteError, write_isolating
from guardian.sinks.postgres import PostgresSink
from guardian.sinks.redis_hot_view import RedisHotView

log = get_logger(__name__)

BATCH = 5000
HOT_VIEW_CHUNK = 500  # events per hot view script call (measured below)
Progress = Callable[[int, int], None]  # (records read, records to read)


@dataclass
class ReplaySummary:
    read: int = 0  # records read from Kafka
    matched: int = 0  # storable events of the asked symbols
    inserted: int = 0  # rows PostgreSQL did not have
    present: int = 0  # rows it had already
    hot_view_keys: int = 0  # latest/breaker/drift keys moved forward
    window_added: int = 0  # events new to the 24 h windows
    dead_letters: int = 0  # undecodable, against the rules, or refused by a store: counted, not re-sent
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rate": round(self.rate)}


class _Counted:
    """A sink whose writes add what they did to the summary (the sinks return it)."""

    def __init__(self, sink: PostgresSink | RedisHotView, summary: ReplaySummary) -> None:
        self.sink, self.summary, self.name = sink, summary, sink.name
        self.is_permanent = sink.is_permanent

    async def write(self, batch: Sequence[StoredEvent]) -> None:
        if isinstance(self.sink, RedisHotView):
            # Redis runs one script at a time: the live fleet's writes wait behind each of ours, so ours are short.
            for start in range(0, len(batch), HOT_VIEW_CHUNK):
                added, moved = await self.sink.write(batch[start : start + HOT_VIEW_CHUNK])
                self.summary.window_added += added
                self.summary.hot_view_keys += moved
        else:
            inserted = await self.sink.write(batch)
            self.summary.inserted += inserted
            self.summary.present += len(batch) - inserted


async def redrive(
    settings: Settings,
    ranges: dict[int, tuple[int, int]],
    *,
    symbols: Collection[str] = (),
    progress: Progress = lambda done, total: None,
    max_rate: float = 0.0,
    postgres: bool = True,
    hot_view: bool = True,
    emit: bool = True,
) -> ReplaySummary:
    """Read [start, end) of each partition of the events topic and write what is storable to the stores.
    emit=False: breaker transitions the hot view applies are not announced on the live feed (a rebuild)."""
    summary = ReplaySummary()
    began = time.monotonic()
    total = sum(end - start for start, end in ranges.values())
    sinks = []
    if postgres:
        sinks.append(_Counted(PostgresSink(settings.postgres_dsn), summary))
    if hot_view:
        view = RedisHotView(settings.redis_url, settings.hot_view_recent_max, settings.live_stream_maxlen, emit=emit)
        sinks.append(_Counted(view, summary))
    consumer = Consumer(client_config(settings, {
        "group.id": f"{settings.worker_group}-replay-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "log_level": 0,
    }))  # fmt: skip
    codec = EventCodec(registry_url=settings.schema_registry_url)
    rules = EventRules.from_settings(settings)
    wanted = set(symbols)
    # Rate-limited, it reads a twentieth of a second's worth at a time: the stores see an even trickle, not a
    # burst of BATCH events and then a pause.
    batch = min(BATCH, max(100, int(max_rate / 20))) if max_rate > 0 else BATCH
    batches = consume_ranges(consumer, settings.events_topic, ranges, batch=batch)

    def poisoned(stored: StoredEvent, error: PermanentWriteError) -> None:
        summary.dead_letters += 1
        log.warning("a store refuses an event for good (the fleet dead-lettered it)", partition=stored.partition,
                    offset=stored.offset, error=str(error))  # fmt: skip

    try:
        while (messages := await asyncio.to_thread(next, batches, None)) is not None:
            batch = _decode(messages, codec, rules, wanted, summary)
            summary.read += len(messages)
            if batch:
                summary.matched += len(batch)
                await asyncio.gather(*(write_isolating(sink, batch, poisoned) for sink in sinks))
            progress(summary.read, total)
            if max_rate > 0:  # keep to the asked rate: sleep what this batch was early by
                await asyncio.sleep(max(0.0, summary.read / max_rate - (time.monotonic() - began)))
    finally:
        await asyncio.to_thread(consumer.close)
        for sink in sinks:
            await sink.sink.close()
    summary.seconds = round(time.monotonic() - began, 3)
    return summary


def _decode(messages: list, codec: EventCodec, rules: EventRules, wanted: set[str], summary: ReplaySummary
            ) -> list[StoredEvent]:  # fmt: skip
    batch = []
    now_us = time.time_ns() // 1000
    for message in messages:
        value = message.value() or b""
        try:
            event = codec.decode(value)
            rules.check(event, now_us)
        except (CodecError, InvalidEventError):
            summary.dead_letters += 1
            continue
        if wanted and event["symbol"] not in wanted:
            continue
        batch.append(StoredEvent(event, message.partition(), message.offset(), value, message.key()))
    return batch
