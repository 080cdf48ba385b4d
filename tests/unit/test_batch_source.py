"""BatchSource's commit bookkeeping and error handling, with a fake consumer (no Kafka).

What the commit rule relies on: only offsets of finished batches are committed, highest per
partition + 1; a revoked partition's finished offsets are committed before it goes, a lost one's
are dropped (its new owner re-reads them); end-of-partition is not an error.
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, TopicPartition

from guardian.stream_processors import batch_source
from guardian.stream_processors.batch_source import BatchSource


class Message:
    def __init__(self, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> KafkaError | None:
        return self._error


class Consumer:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.commits: list[tuple[list[tuple[int, int]], bool]] = []
        self.ready: list[Message] = []
        self.commit_threads: list[str] = []

    def subscribe(self, topics, on_assign, on_revoke, on_lost) -> None:
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commit_threads.append(threading.current_thread().name)
        self.commits.append(([(tp.partition, tp.offset) for tp in offsets], asynchronous))

    def consume(self, n: int, timeout: float) -> list[Message]:
        taken, self.ready = self.ready[:n], self.ready[n:]
        return taken

    def poll(self, timeout: float) -> Message | None:
        return None


def make() -> tuple[BatchSource, Consumer]:
    made: list[Consumer] = []

    def factory(config: dict) -> Consumer:
        made.append(Consumer(config))
        return made[0]

    source = BatchSource({"bootstrap.servers": "unused"}, "group", "events", make_consumer=factory)
    return source, made[0]


def on_its_thread(source: BatchSource) -> None:
    """Wait for what was queued on the source's one consumer thread (commits are made there)."""
    source._thread.submit(lambda: None).result(timeout=5)


def test_the_consumer_commits_nothing_by_itself_and_reads_from_the_start():
    _, consumer = make()
    assert consumer.config["enable.auto.commit"] is False
    assert consumer.config["auto.offset.reset"] == "earliest"
    assert consumer.config["group.id"] == "group"


def test_finished_batches_are_committed_as_the_highest_offset_plus_one_per_partition(monkeypatch):
    monkeypatch.setattr(batch_source, "COMMIT_INTERVAL_S", 0.0)
    source, consumer = make()
    source.commit([Message(0, 5), Message(0, 7), Message(1, 3)])
    on_its_thread(source)
    assert consumer.commits == [([(0, 8), (1, 4)], True)]  # asynchronous: librdkafka keeps their order
    assert not source.uncommitted
    # Never from the caller's thread (the event loop's) while the source's thread reads: one thread per consumer.
    assert consumer.commit_threads[0].startswith("batch-source")


def test_a_commit_waits_for_the_interval_and_an_idle_source_still_makes_it(monkeypatch):
    monkeypatch.setattr(batch_source, "COMMIT_INTERVAL_S", 3600.0)
    source, consumer = make()
    source.commit([Message(2, 10)])
    on_its_thread(source)
    assert consumer.commits == [] and source.uncommitted
    monkeypatch.setattr(batch_source, "COMMIT_INTERVAL_S", 0.0)
    source.commit_due()
    on_its_thread(source)
    assert consumer.commits == [([(2, 11)], True)] and not source.uncommitted


def test_a_revoked_partition_is_committed_before_it_goes_and_a_lost_one_is_not(monkeypatch):
    monkeypatch.setattr(batch_source, "COMMIT_INTERVAL_S", 3600.0)
    changes: list[tuple[str, list[int]]] = []
    source, consumer = make()
    source._on_change = lambda kind, partitions: changes.append((kind, partitions))
    consumer.on_assign(consumer, [TopicPartition("events", 0), TopicPartition("events", 1)])
    source.commit([Message(0, 4), Message(1, 9)])
    consumer.on_revoke(consumer, [TopicPartition("events", 0)])
    assert consumer.commits == [([(0, 5)], False)]  # synchronous: done before the partition moves
    consumer.on_lost(consumer, [TopicPartition("events", 1)])
    assert consumer.commits == [([(0, 5)], False)] and not source.uncommitted
    assert source.assigned == []
    assert changes == [("assigned", [0, 1]), ("revoked", [0]), ("revoked", [1])]


def test_end_of_partition_is_not_an_error_and_other_errors_are_kept_for_health():
    source, consumer = make()
    eof = KafkaError(KafkaError._PARTITION_EOF)
    missing = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "topic missing")
    consumer.ready = [Message(0, 1), Message(0, 2, eof), Message(0, 3, missing)]
    good = asyncio.run(source.next_batch(10, 0.0))
    assert [m.offset() for m in good] == [1]
    assert source.last_error == str(missing)
    consumer.on_assign(consumer, [TopicPartition("events", 0)])
    consumer.ready = [Message(0, 4)]
    asyncio.run(source.next_batch(10, 0.0))
    assert source.last_error == ""  # consuming again clears it


def test_a_refused_login_is_reported_while_kafka_keeps_refusing(monkeypatch):
    source, consumer = make()
    consumer.on_assign(consumer, [TopicPartition("events", 0)])
    refusal = "SASL authentication error: Invalid password (after 104ms in state AUTH_REQ)"
    consumer.config["error_cb"](KafkaError(KafkaError._AUTHENTICATION, refusal))
    assert source.refused == source.last_error == refusal
    consumer.config["error_cb"](KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))
    assert source.refused == refusal  # a transport error is not a refusal
    # Empty polls while partitions are still assigned do not clear it (they did, for a session's time).
    asyncio.run(source.next_batch(10, 0.0))
    assert source.refused == refusal and source.last_error == refusal
    # Records arriving, or joining the group again, prove the login works.
    consumer.ready = [Message(0, 1)]
    asyncio.run(source.next_batch(10, 0.0))
    assert source.refused == source.last_error == ""
    # librdkafka retries a refused login every few seconds: once the refusals stop, it is over.
    consumer.config["error_cb"](KafkaError(KafkaError._AUTHENTICATION, refusal))
    monkeypatch.setattr(batch_source, "REFUSED_FRESH_S", 0.0)
    assert source.refused == ""


def test_the_same_refusal_is_logged_once(monkeypatch):
    _source, consumer = make()
    logged: list[str] = []
    monkeypatch.setattr(batch_source.log, "error", lambda event, **fields: logged.append(fields["error"]))
    for after in (104, 183, 97):
        refusal = f"SASL authentication error: Invalid password (after {after}ms in state AUTH_REQ)"
        consumer.config["error_cb"](KafkaError(KafkaError._AUTHENTICATION, refusal))
    assert len(logged) == 1


def test_a_revoked_partition_waits_until_its_events_in_flight_are_finished_then_commits_them(monkeypatch):
    """Its next owner must start after what this worker still processes: else both handle those events
    (both notify their alerts). The ingest loop finishes batches on its own thread meanwhile."""
    import time

    monkeypatch.setattr(batch_source, "COMMIT_INTERVAL_S", 3600.0)
    source, consumer = make()
    consumer.ready = [Message(0, 10), Message(0, 11), Message(1, 4)]
    batch = asyncio.run(source.next_batch(10, 0.0))
    revoking = threading.Thread(target=consumer.on_revoke, args=(consumer, [TopicPartition("events", 0)]))
    revoking.start()
    time.sleep(0.2)
    assert revoking.is_alive() and consumer.commits == []  # 10 and 11 are still being processed
    source.commit(batch)  # the ingest loop finished the batch
    revoking.join(5)
    assert not revoking.is_alive()
    assert consumer.commits == [([(0, 12)], False)]  # partition 1 stays, and is committed with its own batches


def test_a_revoke_waits_at_most_its_limit_and_not_at_all_when_closing(monkeypatch):
    import time

    monkeypatch.setattr(batch_source, "REVOKE_WAIT_S", 0.2)
    source, consumer = make()
    consumer.ready = [Message(0, 10)]
    asyncio.run(source.next_batch(10, 0.0))
    began = time.monotonic()
    consumer.on_revoke(consumer, [TopicPartition("events", 0)])
    assert 0.2 <= time.monotonic() - began < 2 and consumer.commits == []  # nothing finished: nothing to commit

    consumer.ready = [Message(1, 3)]
    asyncio.run(source.next_batch(10, 0.0))
    source._closing = True
    began = time.monotonic()
    consumer.on_revoke(consumer, [TopicPartition("events", 1)])
    assert time.monotonic() - began < 0.1
