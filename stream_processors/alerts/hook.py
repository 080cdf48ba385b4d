"""The alert engine inside the ingest loop: observe each batch, tick, publish, keep silences fresh."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as redis

from guardian.logs import get_logger
from guardian.schemas.events import StoredEvent
from guardian.stream_processors.alerts.engine import AlertEngine, Silence
from guardian.stream_processors.alerts.outputs import AlertPublisher, load_silences

log = get_logger(__name__)

TICK_EVERY_S = 0.5
SILENCES_EVERY_S = 1.0


class AlertHook:
    """Called by the ingest loop with every batch, in order (empty batches too: time passes)."""

    def __init__(
        self,
        engine: AlertEngine,
        publisher: AlertPublisher,
        client: redis.Redis,
        owned_partitions: Callable[[], Sequence[int]],
        partitions: int,
        make_state_durable: Callable[[], Awaitable[None]] | None = None,
        state_current: Callable[[], Awaitable[object]] | None = None,
        log_id: Callable[[], str] = lambda: "",
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.client = client
        self.owned_partitions = owned_partitions
        self.partitions = partitions
        self.make_state_durable = make_state_durable
        self.state_current = state_current  # waits until the state copy holds what others wrote (state_copy.py)
        self.log_id = log_id  # blocking: the events topic's Kafka id, which tells replays (engine.py)
        self._silences: list[Silence] = []
        self._silences_at = 0.0
        self._ticked_at = 0.0
        self._moved = threading.Event()  # set from the consumer's thread when partitions move
        self._moved.set()  # the first call learns the topic's id
        engine.silences = lambda: self._silences

    def partitions_moved(self, kind: str, partitions: list[int]) -> None:
        self._moved.set()

    async def __call__(self, batch: Sequence[StoredEvent]) -> None:
        if self._moved.is_set():
            self._moved.clear()
            if self.state_current is not None:  # what we now own is judged on the state its last owner left
                await self.state_current()
            self.engine.forget()  # another worker may have changed the state of what we now own
            # Asked at every move: the topic may not exist yet, or have been deleted and created again.
            self.engine.log_id = await asyncio.to_thread(self.log_id) or self.engine.log_id
        now = time.monotonic()
        if now - self._silences_at >= SILENCES_EVERY_S:
            try:
                self._silences = await load_silences(self.client)
                self._silences_at = now
            except Exception as exc:  # Redis down: keep the last silences known
                log.warning("could not refresh silences", error=repr(exc))
        now_us = time.time_ns() // 1000
        notifications = self.engine.observe(batch, now_us) if batch else []
        if now - self._ticked_at >= TICK_EVERY_S:
            owned = set(self.owned_partitions())
            notifications += self.engine.tick(now_us, owned.__contains__, self.partitions)
            self._ticked_at = now
        if notifications:
            await self.publisher.publish(notifications)

    async def before_commit(self) -> None:
        """Called by the ingest loop before it commits a batch's offsets: the alert state the batch
        changed must be in Kafka by then, or a crash would lose state for events never read again.
        Not awaited in the hook itself: there it held up the next batch's alerts (p50 +10 ms)."""
        written = self.engine.unflushed_writes
        if written and self.make_state_durable is not None:
            await self.make_state_durable()
            self.engine.unflushed_writes -= written  # writes made meanwhile wait for the next call
        await self.publisher.mark_sent()
