"""Move the fleet's own committed offsets, so the fleet itself re-reads (or skips) part of the events topic.

What Kafka's `kafka-consumer-groups --reset-offsets` does, for the fleet's group and topic: a plan
first (partition, committed, target, events to re-read), refused while the group has members (Kafka
refuses to alter the offsets of an active group too), acted on only when asked. Re-read events are
harmless: the stores are idempotent and the alert engine remembers what it notified.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from guardian.errors import GuardianError
from guardian.kafka_config import KafkaUnavailableError
from guardian.kafka_lookup import admin_client, committed, members, partitions_of, probe, watermarks
from guardian.settings import Settings
from guardian.stream_processors.replay.plan import offsets_at

EARLIEST = "earliest"
LATEST = "latest"


class GroupActiveError(GuardianError):
    """The group has members: its offsets cannot be moved under them."""


@dataclass(frozen=True)
class ResetRow:
    partition: int
    current: int | None  # committed offset; None when the group never committed this partition
    target: int

    @property
    def reread(self) -> int | None:
        """Events the fleet reads again (negative: skips) once the reset is executed."""
        return None if self.current is None else self.current - self.target


def plan_reset(settings: Settings, *, to_ms: int | None = None, position: str | None = None) -> list[ResetRow]:
    """Where each partition of the events topic would go: the first offset at or after `to_ms`, or the
    partition's `earliest`/`latest` offset."""
    topic, group = settings.events_topic, settings.worker_group
    consumer, trap = probe(settings, "offsets-plan")
    admin, _ = admin_client(settings)
    try:
        partitions = partitions_of(consumer, trap, settings, topic)
        try:
            current = committed(admin, group, topic)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"Kafka at {settings.kafka_bootstrap}: {exc}") from exc
        targets = offsets_at(consumer, topic, partitions, to_ms) if to_ms is not None else {}
        rows = []
        for p in partitions:
            low, high = watermarks(consumer, topic, p)
            target = {EARLIEST: low, LATEST: high}.get(position or "", targets.get(p, high))
            rows.append(ResetRow(p, current.get(p), min(max(target, low), high)))
        return rows
    finally:
        consumer.close()


def execute_reset(settings: Settings, rows: list[ResetRow]) -> None:
    """Commit the targets as the group's offsets; refused while the group has members."""
    group = settings.worker_group
    admin, _ = admin_client(settings)
    active = members(admin, group)
    if active:
        raise GroupActiveError(
            f"consumer group {group} has {len(active)} active member(s) ({', '.join(active)}): stop the workers "
            "first (as Kafka's own tool, this never moves offsets under a running fleet)"
        )
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(settings.events_topic, r.partition, r.target)
                                                   for r in rows])  # fmt: skip
    result = admin.alter_consumer_group_offsets([request])[group].result(timeout=15)
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        refused = ", ".join(f"{tp.partition}: {tp.error}" for tp in failed)
        raise GuardianError(f"Kafka refused the new offsets: {refused}")
