"""The ingest loop of a worker: batch in, decode, dead-letter, sinks, alerts, commit.

Each batch goes through these steps; an offset is committed only after all of them
are done for every batch up to it:

1. `BatchSource.next_batch()` — up to BATCH_MAX records (a rebalance happens inside
   this call, never in the middle of decoding);
2. decode and check the storable-event rules (schemas/validation.py); what fails either goes to
   the DLQ with the reason (`Outbox`);
3. PostgreSQL and the Redis hot view, each retried with backoff while the error is transient;
   rows a store refuses for good are split out and dead-lettered (sinks/base.py);
4. the hooks (the alert engine) see the batch;
5. the outbox is flushed (dead letters and alerts acknowledged by Kafka), and the hooks' own
   state made durable (`before_commit`: the alert table's changelog);
6. the batch's offsets are committed.

Steps 3 and 4 are pipelined (stream_processors/stages.py): each sink and the hooks work
through batches in order, independently of each other, while the next batch is already
being read, so a slow PostgreSQL commit does not delay the Redis hot view or an alert;
batches that queue up behind a busy store are merged into one write. At most
MAX_OPEN_EVENTS are read but uncommitted: when a store is down that fills up and
reading stops (Kafka keeps the events). Batches complete (steps 5-6) strictly in order. A crash anywhere before 6
re-delivers the batch; every step is idempotent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from confluent_kafka import Message

from guardian.logs import get_logger
from guardian.schemas.codec import EventCodec
from guardian.schemas.errors import CodecError
from guardian.schemas.events import StoredEvent
from guardian.schemas.validation import EventRules, InvalidEventError
from guardian.sinks.base import PermanentWriteError, Sink, write_isolating
from guardian.stream_processors import metrics
from guardian.stream_processors.batch_source import BatchSource
from guardian.stream_processors.dlq import dlq_headers
from guardian.stream_processors.outbox import Outbox
from guardian.stream_processors.stages import CoalescingStage

log = get_logger(__name__)

BATCH_MAX = 5000  # records per read; the stages merge reads that queue up behind a slow store
IDLE_WAIT_S = 0.1  # how long a read waits for the first record; a record that arrives ends the wait
MAX_OPEN_EVENTS = 50_000  # read but not yet committed; beyond this, reading stops (backpressure)
# Something that sees every decoded batch, in order, beside the sinks (the alert engine); it may use
# the outbox.
BatchHook = Callable[[Sequence[StoredEvent]], Awaitable[None]]


class IngestLoop:
    def __init__(
        self,
        source: BatchSource,
        codec: EventCodec,
        sinks: Sequence[Sink],
        outbox: Outbox,
        dlq_topic: str,
        hooks: Sequence[BatchHook] = (),
        on_store_down: Callable[[str, bool], None] = lambda name, down: None,
        rules: EventRules | None = None,
        before_commit: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.source = source
        self.codec = codec
        self.sinks = sinks
        self.outbox = outbox
        self.dlq_topic = dlq_topic
        self.hooks = list(hooks)
        self.on_store_down = on_store_down
        self.rules = rules
        self.before_commit = list(before_commit)
        self.stopping = False
        # Read but not committed yet, oldest first: (when read, events, the step it waits for).
        self.open_batches: deque[list] = deque()

    async def run(self) -> None:
        stages = [CoalescingStage(sink.name, partial(self._write, sink)) for sink in self.sinks]
        if self.hooks:
            stages.append(CoalescingStage("hooks", self._run_hooks))
        previous: asyncio.Future | None = None
        in_flight: deque[tuple[asyncio.Future, int]] = deque()
        open_events = 0
        try:
            while not self.stopping:
                batch = await self.source.next_batch(BATCH_MAX, IDLE_WAIT_S)
                decoded = self._decode(batch)
                if batch:
                    metrics.BATCH_SIZE.observe(len(batch))
                else:
                    self.source.commit_due()  # an idle worker still commits what it finished
                # Every stage sees every batch, empty ones too: the hooks' time-based rules need ticks.
                steps = [stage.submit(decoded) for stage in stages]
                tracker = [time.monotonic(), len(batch), "stages"]
                if batch:
                    self.open_batches.append(tracker)
                previous = _after(previous, self._complete(batch, decoded, steps, tracker))
                in_flight.append((previous, len(batch)))
                open_events += len(batch)
                while in_flight and (in_flight[0][0].done() or open_events > MAX_OPEN_EVENTS):
                    done, size = in_flight.popleft()
                    await done  # raises if a step failed for good: the worker stops, uncommitted
                    open_events -= size
            for done, _ in in_flight:
                await done
        finally:
            for stage in stages:
                await stage.close()

    async def _run_hooks(self, decoded: list[StoredEvent]) -> None:
        for hook in self.hooks:
            await hook(decoded)

    async def _complete(self, batch: Sequence[Message], decoded: list[StoredEvent], steps: list, tracker: list) -> None:
        for stage_name, step in zip(self._stage_names(len(steps)), steps, strict=True):
            tracker[2] = f"stage {stage_name}"
            await step
        tracker[2] = "Kafka to acknowledge dead letters and alerts"
        await self._flush_outbox()
        tracker[2] = "Kafka to acknowledge the alert state"
        for step in self.before_commit:
            await step()
        if batch:
            self.source.commit(batch)
            self.open_batches.popleft()  # batches complete strictly in order: this one is the oldest
            self._observe(decoded, len(batch))

    def _stage_names(self, count: int) -> list[str]:
        return [sink.name for sink in self.sinks][:count] + ["alerts"] * (count - len(self.sinks))

    def waiting_on(self) -> tuple[float, int, str]:
        """(seconds the oldest uncommitted batch has been open, its events, the step it waits for)."""
        if not self.open_batches:
            return 0.0, 0, ""
        read_at, events, step = self.open_batches[0]
        return time.monotonic() - read_at, events, step

    def _decode(self, batch: Sequence[Message]) -> list[StoredEvent]:
        decoded: list[StoredEvent] = []
        now_us = time.time_ns() // 1000
        for message in batch:
            value = message.value() or b""
            try:
                event = self.codec.decode(value)
                if self.rules is not None:
                    self.rules.check(event, now_us)
            except InvalidEventError as error:
                self._dead_letter(value, message.key(), message.partition(), message.offset(), error,
                                  rule=error.rule, field=error.field)  # fmt: skip
                continue
            except CodecError as error:
                self._dead_letter(value, message.key(), message.partition(), message.offset(), error)
                continue
            decoded.append(StoredEvent(event, message.partition(), message.offset(), value, message.key()))
        return decoded

    def _dead_letter(
        self, value: bytes, key: bytes | None, partition: int, offset: int, error: Exception, **extra: str
    ) -> None:
        metrics.DLQ.labels(extra.get("rule") or extra.get("stage") or type(error).__name__).inc()
        headers = dlq_headers(error, self.source.topic, partition, offset, **extra)
        self.outbox.send(self.dlq_topic, value, key=key, headers=headers)

    def _poisoned(self, stored: StoredEvent, error: PermanentWriteError) -> None:
        metrics.SINK_REFUSED.labels(error.sink).inc()
        self._dead_letter(stored.raw, stored.key, stored.partition, stored.offset, error.__cause__ or error,
                          rule="store_refused", stage=error.sink)  # fmt: skip

    async def _write(self, sink: Sink, batch: list[StoredEvent]) -> None:
        if not batch:
            return
        began = time.perf_counter()
        await write_isolating(sink, batch, self._poisoned, on_down=self.on_store_down)
        metrics.SINK_SECONDS.labels(sink.name).observe(time.perf_counter() - began)

    async def _flush_outbox(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.outbox.flush()
                return
            except Exception as exc:  # Kafka unreachable: the offsets stay uncommitted until it is back
                log.warning("dead letters/alerts not acknowledged yet; retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _observe(decoded: list[StoredEvent], count: int) -> None:
        metrics.EVENTS.labels("ingest").inc(count)
        now_us = time.time_ns() // 1000
        for stored in decoded[:: max(1, len(decoded) // 100)]:  # a sample is enough for a histogram
            metrics.EVENT_LAG.observe(max(0, now_us - stored.event["event_time"]) / 1e6)


def _after(previous: asyncio.Future | None, step: Coroutine[Any, Any, None]) -> asyncio.Future:
    """Start `step` as soon as `previous` (the completion of the batch before) has finished."""

    async def chained() -> None:
        if previous is not None:
            await previous
        await step

    return asyncio.ensure_future(chained())
