"""The commit rule of the ingest loop, with fakes for Kafka and the stores (pure logic, no services).

An offset is committed only after every sink wrote its batch, the hooks saw it, the outbox was
acknowledged and the before-commit steps ran; batches commit strictly in order; a failure leaves
the batch uncommitted. And a stage merges what queued up behind a slow store.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from guardian.schemas.codec import EventCodec
from guardian.schemas.events import StoredEvent
from guardian.stream_processors.ingest import IngestLoop
from guardian.stream_processors.stages import CoalescingStage

CODEC = EventCodec()


class Message:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"S"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


DRIFT = {"metric": "m", "expected": 1.0, "observed": 1.0, "drift_score": 0.0, "window_seconds": 60}


def record(offset: int) -> Message:
    event = {
        "event_id": str(uuid.uuid4()), "producer_id": "p", "sequence": offset, "host": "h", "symbol": "S",
        "detector": "DRIFT_MONITOR", "event_time": time.time_ns() // 1000, "severity": "INFO", "schema_version": 1,
        "payload": ("io.guardian.events.Drift", DRIFT),
    }  # fmt: skip
    return Message(CODEC.encode(event), offset)


class Source:
    """Hands out the given batches, then stops the loop; records what was committed."""

    topic = "events"

    def __init__(self, batches: list[list[Message]]) -> None:
        self.batches = list(batches)
        self.committed: list[list[int]] = []
        self.loop: IngestLoop | None = None

    async def next_batch(self, max_records: int, wait_s: float) -> list[Message]:
        await asyncio.sleep(0)
        if self.batches:
            return self.batches.pop(0)
        if self.loop is not None:
            self.loop.stopping = True
        return []

    def commit(self, batch: list[Message]) -> None:
        self.committed.append([m.offset() for m in batch])

    def commit_due(self) -> None:
        pass


class Sink:
    """Writes when `gate` is open; records the offsets of each write."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = asyncio.Event()
        self.gate.set()
        self.writes: list[list[int]] = []

    async def start(self) -> None:
        pass

    async def write(self, batch: list[StoredEvent]) -> None:
        await self.gate.wait()
        self.writes.append([s.offset for s in batch])

    async def close(self) -> None:
        pass

    def is_permanent(self, error: Exception) -> bool:
        return False


class Outbox:
    def __init__(self) -> None:
        self.flushes = 0

    def send(self, *args, **kwargs) -> None:
        pass

    async def flush(self) -> None:
        self.flushes += 1


def make_loop(batches, sinks, hooks=(), before_commit=()) -> tuple[IngestLoop, Source, Outbox]:
    source, outbox = Source(batches), Outbox()
    loop = IngestLoop(source, CODEC, sinks, outbox, "dlq", hooks=hooks, before_commit=before_commit)
    source.loop = loop
    return loop, source, outbox


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def test_a_batch_is_committed_only_after_every_sink_and_step():
    async def scenario() -> None:
        fast, slow = Sink("redis"), Sink("postgres")
        slow.gate.clear()
        seen: list[list[int]] = []
        durable: list[int] = []

        async def hook(batch):
            seen.append([s.offset for s in batch])

        async def make_durable():
            durable.append(len(source.committed))

        loop, source, outbox = make_loop([[record(0), record(1)]], [fast, slow], [hook], [make_durable])
        running = asyncio.ensure_future(loop.run())
        await until(lambda: fast.writes and seen)
        await asyncio.sleep(0.05)
        assert source.committed == []  # redis and the hooks are done, postgres is not
        assert loop.waiting_on()[2] == "stage postgres"
        slow.gate.set()
        await asyncio.wait_for(running, 5)
        assert source.committed == [[0, 1]]
        assert outbox.flushes >= 1
        assert durable[0] == 0  # made durable before the first commit

    asyncio.run(scenario())


def test_batches_commit_in_the_order_they_were_read():
    async def scenario() -> None:
        sink = Sink("postgres")
        batches = [[record(i)] for i in range(5)]
        loop, source, _ = make_loop(batches, [sink])
        await asyncio.wait_for(loop.run(), 5)
        assert source.committed == [[0], [1], [2], [3], [4]]

    asyncio.run(scenario())


def test_a_failing_hook_stops_the_loop_with_nothing_committed():
    async def scenario() -> None:
        async def broken(batch):
            raise RuntimeError("alert outputs broken")

        loop, source, _ = make_loop([[record(0)]], [Sink("postgres")], [broken])
        with pytest.raises(RuntimeError, match="alert outputs broken"):
            await asyncio.wait_for(loop.run(), 5)
        assert source.committed == []

    asyncio.run(scenario())


def test_bad_records_go_to_the_dlq_and_the_batch_still_commits():
    async def scenario() -> None:
        sink = Sink("postgres")
        sent: list[tuple] = []
        loop, source, outbox = make_loop([[record(0), Message(b"\x00garbage", 1), record(2)]], [sink])
        outbox.send = lambda topic, value, key=None, headers=None: sent.append((topic, value))
        await asyncio.wait_for(loop.run(), 5)
        assert sink.writes == [[0, 2]]
        assert sent == [("dlq", b"\x00garbage")]
        assert source.committed == [[0, 1, 2]]  # the dead letter's offset too: it was handled

    asyncio.run(scenario())


def test_a_stage_merges_the_batches_that_queued_behind_a_slow_store():
    async def scenario() -> None:
        calls: list[list[int]] = []
        gate = asyncio.Event()

        async def work(items: list[int]) -> None:
            calls.append(items)
            if len(calls) == 1:
                await gate.wait()

        stage = CoalescingStage("postgres", work)
        first = stage.submit([1])
        await until(lambda: calls)
        rest = [stage.submit([2]), stage.submit([3, 4])]  # queued while the first write is slow
        gate.set()
        await asyncio.gather(first, *rest)
        assert calls == [[1], [2, 3, 4]]
        await stage.close()

    asyncio.run(scenario())


def test_a_stage_hands_a_failure_to_every_batch_of_that_write():
    async def scenario() -> None:
        gate = asyncio.Event()
        calls: list[list[int]] = []

        async def work(items: list[int]) -> None:
            calls.append(items)
            await gate.wait()
            if 2 in items:
                raise ValueError("refused")

        stage = CoalescingStage("postgres", work)
        first = stage.submit([1])
        await until(lambda: calls)
        second, third = stage.submit([2]), stage.submit([3])  # merged into the next write, which fails
        gate.set()
        await first
        for future in (second, third):
            with pytest.raises(ValueError, match="refused"):
                await future
        assert calls == [[1], [2, 3]]
        await stage.close()

    asyncio.run(scenario())
