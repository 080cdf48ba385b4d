"""The commit path's pure logic: isolating rows a store refuses, and cutting records to Kafka's limit."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence

import pytest

from guardian.schemas.events import StoredEvent
from guardian.schemas.validation import EventRules, InvalidEventError
from guardian.sinks.base import PermanentWriteError, write_isolating
from guardian.stream_processors.outbox import ORIGINAL_SHA256_HEADER, TRUNCATED_HEADER, Outbox, fit


class RefusingSink:
    """Refuses, for good, any batch holding a row marked poison; fails transiently `flaky` times first."""

    name = "fake"

    def __init__(self, flaky: int = 0) -> None:
        self.stored: list[int] = []
        self.writes = 0
        self.flaky = flaky

    async def write(self, batch: Sequence[StoredEvent]) -> None:
        self.writes += 1
        if self.flaky:
            self.flaky -= 1
            raise ConnectionError("store restarting")
        if any(row.event["poison"] for row in batch):
            raise ValueError("cannot hold this value")
        self.stored += [row.offset for row in batch]

    @staticmethod
    def is_permanent(error: Exception) -> bool:
        return isinstance(error, ValueError)


def rows(count: int, poison: set[int]) -> list[StoredEvent]:
    return [StoredEvent({"poison": i in poison}, partition=0, offset=i) for i in range(count)]


def test_only_the_refused_rows_are_split_out_and_the_rest_is_stored():
    sink, refused = RefusingSink(), []
    count = asyncio.run(write_isolating(sink, rows(1000, {3, 500, 999}), lambda row, err: refused.append(row.offset)))
    assert count == 3 and refused == [3, 500, 999]
    assert sorted(sink.stored) == [i for i in range(1000) if i not in {3, 500, 999}]
    assert sink.writes < 70  # bisection: about 2·log2(n) writes per poison row, not n


def test_transient_errors_are_retried_not_dead_lettered():
    sink, refused = RefusingSink(flaky=2), []
    asyncio.run(write_isolating(sink, rows(10, set()), lambda row, err: refused.append(row)))
    assert refused == [] and sorted(sink.stored) == list(range(10)) and sink.writes == 3


def test_the_refused_row_carries_the_store_error():
    errors: list[PermanentWriteError] = []
    asyncio.run(write_isolating(RefusingSink(), rows(4, {2}), lambda row, err: errors.append(err)))
    assert len(errors) == 1 and "fake: ValueError: cannot hold this value" in str(errors[0])
    assert isinstance(errors[0].__cause__, ValueError)


def test_a_record_over_the_limit_is_cut_with_headers_naming_the_original():
    value = b"x" * 2_000_000
    cut, headers = fit(value, b"key", [("guardian.dlq.rule", b"max_length")], 1_000_000)
    named = dict(headers or [])
    assert len(cut) + len(b"key") + sum(len(k) + len(v) for k, v in named.items()) < 1_000_000
    assert named[TRUNCATED_HEADER] == b"true" and named["guardian.dlq.rule"] == b"max_length"
    assert named[ORIGINAL_SHA256_HEADER] == hashlib.sha256(value).hexdigest().encode()
    assert fit(b"small", None, None, 1_000_000) == (b"small", None)


def test_the_worker_rules_refuse_what_emit_never_makes():
    rules = EventRules(max_age_us=3_600_000_000, max_future_us=300_000_000)
    event = {"event_id": "5e1b7a36-93a4-4d1c-8e8f-2f7b8d7c1a00", "producer_id": "p", "host": "h", "symbol": "S",
             "event_time": 10**15, "payload": ("x", {"metric": "m", "drift_score": 1.0})}  # fmt: skip
    rules.check(event, now_us=10**15)
    for change, rule in (({"event_id": "E1"}, "uuid"), ({"host": "h\x00"}, "no_nul"),
                         ({"event_time": 10**15 + 301_000_000}, "time_window")):  # fmt: skip
        with pytest.raises(InvalidEventError) as refused:
            rules.check({**event, **change}, now_us=10**15)
        assert refused.value.rule == rule


class FullQueue:
    """librdkafka's side of an Outbox whose local queue is full until `room_after` polls."""

    def __init__(self, room_after: int) -> None:
        self.room_after = room_after
        self.produced: list[bytes] = []
        self.callbacks: list = []

    def produce(self, topic, value, key, headers, on_delivery) -> None:
        if self.room_after > 0:
            raise BufferError("Local: Queue full")
        self.produced.append(value)
        self.callbacks.append(on_delivery)

    def poll(self, timeout: float) -> int:
        self.room_after -= 1
        return 0

    def flush(self, timeout: float) -> int:
        for callback in self.callbacks:
            callback(None, None)
        self.callbacks = []
        return 0


def test_outbox_send_never_waits_for_room_and_flush_delivers_everything_in_order():
    outbox = Outbox({"bootstrap.servers": "127.0.0.1:1"})
    outbox._producer = FullQueue(room_after=3)  # the local queue is full for three polls
    began = time.perf_counter()
    for i in range(5):
        outbox.send("dlq", f"r{i}".encode())
    assert time.perf_counter() - began < 0.01  # no polling on the caller's (event loop's) thread
    assert outbox.pending == 5
    asyncio.run(outbox.flush(5))
    assert outbox.pending == 0 and outbox._producer.produced == [b"r0", b"r1", b"r2", b"r3", b"r4"]
