"""Batches of raw records from the events topic, through confluent-kafka's consumer.

Why not a Faust stream: Faust hands every message through its conductor, a channel
queue and several event-loop turns; on this machine a Faust agent that does nothing
but `take_events(2000)` tops out at 12.7k-14.6k messages/s (bench/results/pipeline.json,
`faust_null_agent_events_per_s`), which leaves no room for the sinks. librdkafka
fetches in its own threads and `consume(n)` returns a whole batch in one call, which we
run in a worker thread so the event loop never blocks.

Offsets: auto-commit is off. The ingest loop calls `commit(batch)` only after every sink
wrote the batch; the source then commits, per partition, the offset after the last such
record, at most every COMMIT_INTERVAL_S and always before partitions are revoked or the
consumer closes (at-least-once; the sinks are idempotent, so the stores end up exactly-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from guardian.logs import get_logger

log = get_logger(__name__)

COMMIT_INTERVAL_S = 0.2
# How long a revoked partition waits for its batches in flight (a store outage can hold them for good; the
# group's rebalance waits meanwhile). Past it, the partition goes and its next owner may repeat them.
REVOKE_WAIT_S = 15.0
TOPIC_ID_TIMEOUT_S = 10.0
REFUSED_FRESH_S = 30.0
_AFTER = re.compile(r" \(after \d+ms in state \w+\)$")
# The broker answers a fetch once 16 KB are there or 5 ms have passed, instead of at the first byte.
# Measured at 5k events/s: batches of ~24 events instead of ~14, and the worker, broker, Redis and
# PostgreSQL together used 89% of a core instead of 119%; emit->Redis p50 22-24 ms instead of 20-22 ms.
WORKER_FETCH = {"fetch.wait.max.ms": 5, "fetch.min.bytes": 16_384}


class BatchSource:
    """One consumer-group member reading `topic` in batches; rebalances call `on_assignment_change`."""

    def __init__(
        self,
        connection: dict[str, Any],
        group: str,
        topic: str,
        on_assignment_change: Callable[[str, list[int]], None] = lambda kind, partitions: None,
        max_poll_interval_ms: int = 600_000,
        make_consumer: Callable[[dict[str, Any]], Consumer] = Consumer,  # tests pass a fake
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 2000,
    ) -> None:
        self.topic = topic
        self._connection = connection  # guardian.kafka_config.client_config(): bootstrap and security
        self._on_change = on_assignment_change
        self._consumer = make_consumer(
            {
                **connection,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # A store outage keeps a batch in retry; the member must not be evicted meanwhile.
                "max.poll.interval.ms": max_poll_interval_ms,
                # How long a killed member's partitions wait: librdkafka's default session is 45 s, which
                # kept a killed worker's partitions unread for 52-61 s at 5k events/s (docs/recovery.md).
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": heartbeat_interval_ms,
                **WORKER_FETCH,
                "partition.assignment.strategy": "cooperative-sticky",
                "on_commit": self._on_commit,
                "error_cb": self._on_kafka_error,
            }
        )
        # One thread: librdkafka consumer calls must not overlap.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-source")
        self._assigned: set[int] = set()
        # The consumer's last error, e.g. the topic does not exist; cleared once it consumes again.
        # Shown by the worker's /healthz, logged once per distinct error.
        self.last_error = ""
        # Kafka refusing this worker's credentials (or a fatal client error): /healthz is not ok while it lasts.
        self._refusal = ""
        self._refused_at = 0.0
        self._done: dict[int, int] = {}  # partition -> highest offset whose batch is complete, not yet committed
        self._last_commit = time.monotonic()
        self.committed_at = time.monotonic()  # when Kafka last confirmed a commit of ours (for /healthz)
        self._lock = threading.Lock()
        # Offsets handed to the ingest loop and those it finished, per partition: a revoked partition waits
        # (REVOKE_WAIT_S at most) until what was handed out is finished, so its next owner does not
        # process those events a second time while this worker still does (alerts were sent twice).
        self._handed: dict[int, int] = {}
        self._finished: dict[int, int] = {}
        self._progress = threading.Condition(self._lock)
        self._closing = False
        self._consumer.subscribe(
            [topic], on_assign=self._assigned_cb, on_revoke=self._revoked_cb, on_lost=self._lost_cb
        )

    def _on_kafka_error(self, error: KafkaError) -> None:
        """Client-level errors (librdkafka's error_cb, on the source's thread). A refused login reaches
        only this callback: consume() just sees no records, and /healthz said ok."""
        if error.code() == KafkaError._AUTHENTICATION or error.fatal():
            text = error.str()
            # librdkafka ends the text with "(after 104ms in state AUTH_REQ)": the same refusal, said once.
            if _AFTER.sub("", text) != _AFTER.sub("", self._refusal) or not self.refused:
                log.error("kafka refuses the worker", error=text, topic=self.topic)
            self._refusal, self._refused_at = text, time.monotonic()
            self.last_error = text

    @property
    def refused(self) -> str:
        """Why Kafka refuses this worker, while it does: librdkafka retries a refused login every few
        seconds (reconnect.backoff.max.ms, 10 s), so a refusal older than REFUSED_FRESH_S is over."""
        return self._refusal if time.monotonic() - self._refused_at < REFUSED_FRESH_S else ""

    # Rebalance callbacks run inside consume(), on the source's thread.
    def _assigned_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned.update(p.partition for p in partitions)
        self._refusal = ""  # joined the group: Kafka takes our login again
        log.info("partitions assigned", partitions=sorted(p.partition for p in partitions))
        self._on_change("assigned", [p.partition for p in partitions])

    def _revoked_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # What was handed out for these partitions is finished and committed before they go, so their next
        # owner starts after it. The ingest loop finishes batches on the event loop meanwhile: it is
        # waiting for this thread's consume() to return, not blocking it.
        revoked = {p.partition for p in partitions}
        if not self._closing:  # closing: the ingest loop has stopped, nothing in flight will finish
            self._wait_until_finished(revoked, REVOKE_WAIT_S)
        self._commit_done(revoked, asynchronous=False)
        with self._lock:
            self._assigned.difference_update(revoked)
            self._forget(revoked)
        log.info("partitions revoked", partitions=sorted(p.partition for p in partitions))
        self._on_change("revoked", [p.partition for p in partitions])

    def _lost_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:  # lost, not revoked: another member owns them already, a commit would be refused
            self._assigned.difference_update(p.partition for p in partitions)
            for p in partitions:
                self._done.pop(p.partition, None)
            self._forget({p.partition for p in partitions})
        log.warning("partitions lost", partitions=sorted(p.partition for p in partitions))
        self._on_change("revoked", [p.partition for p in partitions])

    def _wait_until_finished(self, partitions: set[int], timeout_s: float) -> bool:
        def finished() -> bool:
            return all(self._finished.get(p, -1) >= self._handed.get(p, -1) for p in partitions)

        with self._progress:
            if self._progress.wait_for(finished, timeout_s):
                return True
            behind = {p: f"finished to {self._finished.get(p, '-')}, read to {self._handed[p]}"
                      for p in partitions if self._finished.get(p, -1) < self._handed.get(p, -1)}  # fmt: skip
        log.warning("revoked partitions still have events in flight; their next owner may process them again",
                    offsets=behind, waited_s=timeout_s)  # fmt: skip
        return False

    def _forget(self, partitions: set[int]) -> None:
        """Under the lock: a partition that comes back starts its own count (its offsets may have moved)."""
        for partition in partitions:
            self._handed.pop(partition, None)
            self._finished.pop(partition, None)

    @property
    def assigned(self) -> list[int]:
        with self._lock:
            return sorted(self._assigned)

    async def next_batch(self, max_records: int, wait_s: float) -> list[Message]:
        """Up to `max_records` records: what is already fetched, or else the first to arrive within `wait_s`
        plus what came with it. Never waits once a record is there, so latency stays low at any rate."""
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(self._thread, self._take, max_records, wait_s)
        if messages:
            with self._lock:
                for message in messages:
                    if message.error() is None and message.offset() > self._handed.get(message.partition(), -1):
                        self._handed[message.partition()] = message.offset()
        good = []
        failed = False
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                if str(error) != self.last_error:
                    log.warning("consumer error", error=str(error), topic=self.topic)
                self.last_error, failed = str(error), True
        if good:
            self._refusal = ""  # records arrive: Kafka takes our login again
        if not failed and (good or self.assigned):  # consuming again (an idle topic has no records)
            self.last_error = self.refused
        return good

    def _take(self, max_records: int, wait_s: float) -> list[Message]:
        ready = self._consumer.consume(max_records, 0)
        if ready:
            return ready
        first = self._consumer.poll(wait_s)
        return [first, *self._consumer.consume(max_records - 1, 0)] if first is not None else []

    def commit(self, batch: Sequence[Message]) -> None:
        """Mark `batch` done: its offsets are committed within COMMIT_INTERVAL_S (or at once on revoke/close).

        Committing every batch would cost a broker round trip per batch (hundreds per second at low
        latency); a crash loses at most COMMIT_INTERVAL_S of commits, which only means redelivery."""
        with self._lock:
            for message in batch:
                partition, offset = message.partition(), message.offset()
                if offset >= self._done.get(partition, -1):
                    self._done[partition] = offset
                if offset > self._finished.get(partition, -1):
                    self._finished[partition] = offset
            self._progress.notify_all()
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
            self._commit_soon()

    def commit_due(self) -> None:
        """Commit what is done if COMMIT_INTERVAL_S has passed: called while idle, so the last batches
        before a pause are committed too, not only when the next batch completes."""
        if self._done and time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
            self._commit_soon()

    def _commit_soon(self) -> None:
        """Commit on the source's thread, after the read in progress (IDLE_WAIT_S at most): librdkafka never
        sees two calls on this consumer at once (not the cause of the aborts inside librdkafka on a broker
        restart, docs/benchmarks.md#faults: they happen with it too)."""
        self._last_commit = time.monotonic()  # not again until this one ran
        with contextlib.suppress(RuntimeError):  # closed: close() committed what was done
            self._thread.submit(self._commit_done)

    @property
    def uncommitted(self) -> bool:
        """Whether finished batches wait for their commit."""
        with self._lock:
            return bool(self._done)

    def _commit_done(self, partitions: set[int] | None = None, asynchronous: bool = True) -> None:
        with self._lock:
            chosen = {p: o for p, o in self._done.items() if partitions is None or p in partitions}
            for p in chosen:
                del self._done[p]
        self._last_commit = time.monotonic()
        if chosen:
            # Asynchronous: librdkafka sends commits in order; failures arrive in _on_commit.
            offsets = [TopicPartition(self.topic, p, o + 1) for p, o in chosen.items()]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
            except KafkaException as exc:
                log.warning("offset commit failed", error=str(exc))

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:  # e.g. the partitions were revoked meanwhile: their new owner re-reads them
            log.warning("offset commit failed", error=str(error))
        elif any(p.error is None for p in partitions):
            self.committed_at = time.monotonic()

    def topic_id(self) -> str:
        """The topic's Kafka id ("" while it does not exist or Kafka does not answer). Blocking: call it
        in a thread. It tells a topic from one deleted and created again under the same name."""
        admin = AdminClient(self._connection)
        try:
            futures = admin.describe_topics(TopicCollection([self.topic]), request_timeout=TOPIC_ID_TIMEOUT_S)
            return str(futures[self.topic].result(timeout=TOPIC_ID_TIMEOUT_S + 5).topic_id)
        # A future's TimeoutError (Kafka did not answer in time, e.g. refusing our credentials) crashed the
        # worker: the alert hook asks for the id on every partition move, "partitions lost" included.
        except (KafkaException, TimeoutError):
            return ""

    async def lag(self) -> dict[int, int]:
        """Records behind the high watermark, per assigned partition (watermarks cached from fetches)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._lag)

    def _lag(self) -> dict[int, int]:
        lags = {}
        for tp in self._consumer.position([TopicPartition(self.topic, p) for p in self.assigned]):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                lags[tp.partition] = high - tp.offset
        return lags

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        self._closing = True
        await loop.run_in_executor(self._thread, partial(self._commit_done, asynchronous=False))
        await loop.run_in_executor(self._thread, self._consumer.close)  # leaves the group: quick rebalance
        self._thread.shutdown(wait=True)
