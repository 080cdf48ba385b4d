"""The live feed behind `/v1/stream`: one reader of the Redis stream per API process, fanned out to
every connected client, plus the 1 Hz platform metrics.

Breaker transitions and alert changes are written to the stream by the fleet, atomically with the
state they describe (sinks/live_feed.py). One `XREAD BLOCK` loop serves every browser tab, so a
hundred dashboards cost Redis one blocked connection. A client that cannot keep up is dropped rather
than buffered without bound; its EventSource reconnects with `Last-Event-ID` and the hub replays the
entries it missed from the stream (which keeps the newest ~10k).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as redis

from guardian.logs import get_logger
from guardian.sinks.live_feed import LIVE_STREAM, parse_entry

log = get_logger(__name__)
CLIENT_QUEUE = 256
BACKFILL_MAX = 1000
BLOCK_MS = 2000  # under the client's 5 s socket timeout
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@dataclass(frozen=True)
class Message:
    kind: str  # the SSE `event:` name: breaker, alert, metrics
    data: dict[str, Any]
    id: str | None = None  # the stream entry id (metrics have none: only the newest matters)

    def encode(self) -> bytes:
        head = f"id: {self.id}\n" if self.id else ""
        return f"{head}event: {self.kind}\ndata: ".encode() + orjson.dumps(self.data) + b"\n\n"


def decode_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Message | None:
    """None for an entry of a type this version does not know (a newer writer may add some)."""
    entry = parse_entry(fields)
    if entry is None:
        return None
    data = dict(entry)
    return Message(data.pop("type"), data, entry_id.decode())


class Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(CLIENT_QUEUE)
        self.dropped = False

    def offer(self, message: Message) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped = True  # it reconnects and resumes from its last id
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.get_nowait()
                self.queue.put_nowait(None)


class LiveHub:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.subscribers: set[Subscriber] = set()
        self.latest_metrics: Message | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name="live-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def publish(self, message: Message) -> None:
        if message.kind == "metrics":
            self.latest_metrics = message
        for subscriber in list(self.subscribers):
            subscriber.offer(message)

    async def _read(self) -> None:
        last = "$"
        while True:
            try:
                replies = await self.client.xread({LIVE_STREAM: last}, block=BLOCK_MS, count=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the status says so; retry, keep the clients
                log.warning("live feed: reading the stream failed; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            for _, entries in replies:
                for entry_id, fields in entries:
                    last = entry_id
                    if message := decode_entry(entry_id, fields):
                        self.publish(message)

    async def subscribe(self, last_event_id: str | None, keepalive_s: float = 15.0) -> AsyncIterator[Message | None]:
        """The client's messages: first what it missed since `last_event_id`, then live ones; None after
        `keepalive_s` without any (the caller sends a comment line so proxies keep the stream open)."""
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        try:
            sent = last_event_id if last_event_id and STREAM_ID.match(last_event_id) else None
            if sent:
                for entry_id, fields in await self.client.xrange(LIVE_STREAM, f"({sent}", "+",
                                                                  count=BACKFILL_MAX):  # fmt: skip
                    sent = entry_id.decode()
                    if message := decode_entry(entry_id, fields):
                        yield message
            if self.latest_metrics:
                yield self.latest_metrics
            while True:
                try:
                    message = await asyncio.wait_for(subscriber.queue.get(), keepalive_s)
                except TimeoutError:
                    yield None
                    continue
                if message is None:
                    return  # too slow: the browser reconnects with its last id
                if message.id and sent and _stream_id(message.id) <= _stream_id(sent):
                    continue  # already sent by the backfill
                yield message
        finally:
            self.subscribers.discard(subscriber)


def _stream_id(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)
