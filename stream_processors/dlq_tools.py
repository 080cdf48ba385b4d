"""Reading and replaying the dead-letter topic (used by `guardian dlq`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from guardian.kafka_config import ErrorTrap, KafkaUnavailableError, client_config
from guardian.settings import Settings
from guardian.stream_processors.dlq import headers_dict
from guardian.stream_processors.outbox import OutboxError

REPLAY_GROUP_SUFFIX = "-dlq-replay"


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]


def read_dlq(settings: Settings, limit: int | None, group: str | None = None) -> list[DeadLetter]:
    """Records from the start (or from `group`'s committed offsets) up to the current end."""
    trap = ErrorTrap()
    consumer = Consumer(
        client_config(
            settings,
            {
                "group.id": group or f"{settings.worker_group}-dlq-inspect",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "error_cb": trap,
                "log_level": 0,
            },
        )
    )
    try:
        try:
            topic = consumer.list_topics(settings.dlq_topic, timeout=10).topics[settings.dlq_topic]
        except KafkaException as exc:
            raise KafkaUnavailableError(f"Kafka at {settings.kafka_bootstrap}: {trap.reason(consumer, exc)}") from exc
        partitions = topic.partitions
        assignment = []
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(settings.dlq_topic, p), timeout=10)
            start = low
            if group:
                committed = _committed(consumer, TopicPartition(settings.dlq_topic, p))
                start = max(low, committed) if committed >= 0 else low
            if start < high:
                assignment.append(TopicPartition(settings.dlq_topic, p, start))
                ends[p] = high
        consumer.assign(assignment)
        records: list[DeadLetter] = []
        while ends and (limit is None or len(records) < limit):
            message = consumer.poll(5.0)
            if message is None:
                break
            if message.error():
                continue
            records.append(
                DeadLetter(
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    headers_dict(message.headers()),
                )
            )
            if message.offset() + 1 >= ends.get(message.partition(), 0):
                ends.pop(message.partition(), None)
        return records
    finally:
        consumer.close()


# The group's coordinator is not ready yet: a fresh broker creates __consumer_offsets at the first
# group's first use, and a moved coordinator loads it. Worth waiting for, briefly.
COORDINATOR_WAIT_S = 30.0
COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def _committed(consumer: Consumer, partition: TopicPartition) -> int:
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    while True:
        try:
            return consumer.committed([partition], timeout=10)[0].offset
        except KafkaException as exc:
            if exc.args[0].code() not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def replay_group(settings: Settings) -> str:
    """The consumer group that remembers how far the DLQ was replayed, so nothing is replayed twice."""
    return f"{settings.worker_group}{REPLAY_GROUP_SUFFIX}"


def offset_ranges(records: list[DeadLetter]) -> dict[str, list[int]]:
    """partition -> [first offset, last offset] of the records (what an audit row of a replay names)."""
    ranges: dict[str, list[int]] = {}
    for record in records:
        first, last = ranges.get(str(record.partition), [record.offset, record.offset])
        ranges[str(record.partition)] = [min(first, record.offset), max(last, record.offset)]
    return ranges


def replay_records(settings: Settings, records: list[DeadLetter]) -> int:
    """Re-submit to the events topic, then record the progress in the replay group."""
    producer = Producer(client_config(settings, {"enable.idempotence": True}))
    for record in records:
        producer.produce(settings.events_topic, record.value, record.key)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        raise OutboxError(f"{remaining} record(s) were not acknowledged by Kafka; run the replay again")
    done: dict[int, int] = {}
    for record in records:
        done[record.partition] = max(done.get(record.partition, 0), record.offset + 1)
    consumer = Consumer(client_config(settings, {"group.id": replay_group(settings)}))
    try:
        consumer.commit(offsets=[TopicPartition(settings.dlq_topic, p, o) for p, o in done.items()], asynchronous=False)
    finally:
        consumer.close()
    return len(records)
