"""The spool's way back to Kafka: records sent in order through a librdkafka producer of their own.

Each record is acknowledged in the spool when Kafka confirms it, so a segment is deleted only once
every record in it was delivered. A failed delivery rewinds the spool (once every record in flight
has settled) and sends again from the first unacknowledged record: consumers deduplicate by
event id, so a record may arrive twice, never zero times. A record Kafka refuses for good (larger
than the broker's limit) is set aside on disk instead of blocking the spool behind it. A dead
broker, or a topic that does not exist, costs one metadata request a second and no other work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from guardian.logs import get_logger
from guardian.producers.spool import Spool

log = get_logger(__name__)

READ_BATCH = 5_000
MAX_IN_FLIGHT = 50_000


class SpoolDrain:
    def __init__(
        self,
        spool: Spool,
        producer: Producer,
        topic: str,
        lock: threading.Lock,
        *,
        stopping: threading.Event,
        on_failed: Callable[[], None],
        set_aside: Callable[[bytes, KafkaError], None],
        producer_id: str,
    ) -> None:
        """`lock` is the owner's: it guards the spool's acks and the counters the callbacks change.
        `on_failed` and `set_aside` are called under it."""
        self.spool = spool
        self.producer = producer
        self.topic = topic
        self._lock = lock
        self._stopping = stopping
        self._on_failed = on_failed
        self._set_aside = set_aside
        self._producer_id = producer_id
        self.delivered = 0
        self.in_flight = 0
        self._failed = False
        self._checked_at = 0.0
        self._ready = False
        self.problem = ""  # what keeps Kafka from taking the records; logged once until it changes or clears

    def step(self) -> bool:
        """Send the next records; True once the spool is empty and nothing is in flight."""
        if not self._can_drain(time.monotonic()):
            return False
        with self._lock:
            if self._failed:
                if self.in_flight:
                    return False  # rewind only once every in-flight record has settled
                self.spool.rewind()
                self._failed = False
            if self.in_flight >= MAX_IN_FLIGHT:
                return False
        batch = self.spool.read_batch(READ_BATCH)
        if not batch:
            with self._lock:
                return self.spool.pending_records() == 0 and self.in_flight == 0
        for segment, key, value in batch:
            if not self._send(segment, key, value):
                break
        return False

    def _can_drain(self, now: float) -> bool:
        """Whether the broker is up and the topic exists, checked at most once a second."""
        if now - self._checked_at >= 1.0:
            self._checked_at = now
            try:
                topic = self.producer.list_topics(self.topic, timeout=1.0).topics[self.topic]
            except KafkaException:
                self._ready = False  # the broker is away: already logged by the owner's error_cb
            else:
                self._ready = topic.error is None
                if topic.error is not None:
                    self._blocked(f"topic {self.topic!r}: {topic.error.str()}")
        return self._ready

    def _blocked(self, problem: str) -> None:
        """Records stay in the spool, retried once a second; said once per distinct problem."""
        self._ready = False
        if problem != self.problem:
            log.error(
                "kafka refuses the spooled events; they stay on disk and are retried",
                problem=problem,
                spooled=self.spool.pending_records(),
                producer_id=self._producer_id,
            )
            self.problem = problem

    def _send(self, segment: int, key: bytes, value: bytes) -> bool:
        """Hand one spooled record to the producer; False ends this batch."""
        while True:
            try:
                self.producer.produce(self.topic, value, key, on_delivery=self._on_delivery(segment))
            except BufferError:
                self.producer.poll(0.05)  # librdkafka's queue is full: serve callbacks, retry
                if self._stopping.is_set():
                    self.spool.rewind()
                    return False
                continue
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    self._blocked(error.str())  # e.g. the topic was deleted under us
                    with self._lock:
                        self._failed = True  # from this record on, read again once it clears
                    return False
                with self._lock:  # spooled under a larger limit: it would block the spool forever
                    self._set_aside(value, error)
                    self.spool.ack(segment)
                return True
            with self._lock:
                self.in_flight += 1
            return True

    def _on_delivery(self, segment: int) -> Any:
        def callback(error: KafkaError | None, message: Any) -> None:
            with self._lock:
                self.in_flight -= 1
                if error is None:
                    self.delivered += 1
                    self.spool.ack(segment)
                    self.problem = ""
                elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE:  # would block the spool forever
                    self._on_failed()
                    self._set_aside(message.value(), error)
                    self.spool.ack(segment)
                else:
                    self._on_failed()
                    self._failed = True

        return callback
