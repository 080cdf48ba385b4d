"""Looking at Kafka without joining a group: partitions, watermarks, a group's committed offsets and
members, the fleet's lag. Shared by the replay and offsets commands, the verifier and the API's status."""

from __future__ import annotations

from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from guardian.errors import GuardianError
from guardian.kafka_config import ErrorTrap, KafkaUnavailableError, client_config
from guardian.settings import Settings


def probe(settings: Settings, name: str) -> tuple[Consumer, ErrorTrap]:
    """A consumer that only looks (metadata, watermarks, offsets by time); it never joins a group."""
    trap = ErrorTrap()
    consumer = Consumer(client_config(settings, {
        "group.id": f"{settings.worker_group}-{name}", "enable.auto.commit": False, "error_cb": trap, "log_level": 0,
    }))  # fmt: skip
    return consumer, trap


def admin_client(settings: Settings) -> tuple[AdminClient, ErrorTrap]:
    trap = ErrorTrap()
    return AdminClient(client_config(settings, {"error_cb": trap, "log_level": 0})), trap


def partitions_of(consumer: Consumer, trap: ErrorTrap, settings: Settings, topic: str) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    except KafkaException as exc:
        raise KafkaUnavailableError(f"Kafka at {settings.kafka_bootstrap}: {trap.reason(consumer, exc)}") from exc
    if metadata.error is not None:
        raise GuardianError(f"topic {topic}: {metadata.error.str()} (run `guardian stack init`?)")
    return sorted(metadata.partitions)


def watermarks(consumer: Consumer, topic: str, partition: int, timeout: float = 10) -> tuple[int, int]:
    return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)


def committed(admin: AdminClient, group: str, topic: str, timeout: float = 15.0) -> dict[int, int]:
    """partition -> the group's committed offset (partitions it never committed are absent)."""
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=timeout)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.topic == topic and tp.offset >= 0}


def members(admin: AdminClient, group: str) -> list[str]:
    """The group's active members as `client id@host`; empty when the group is empty or gone."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=15)
    if description.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD):
        return []
    return [f"{m.client_id}@{m.host.lstrip('/')}" for m in description.members] or [f"(state {description.state.name})"]


def group_lag(settings: Settings, group: str, topic: str) -> dict[int, tuple[int | None, int]]:
    """partition -> (the group's committed offset or None, the partition's end): lag from Kafka itself,
    right even when every member of the group is down. Blocking; raises KafkaUnavailableError."""
    consumer, trap = probe(settings, "lag-probe")
    admin, _ = admin_client(settings)
    try:
        partitions = partitions_of(consumer, trap, settings, topic)
        done = committed(admin, group, topic, timeout=5)
        return {p: (done.get(p), watermarks(consumer, topic, p, timeout=5)[1]) for p in partitions}
    except KafkaException as exc:
        raise KafkaUnavailableError(f"Kafka at {settings.kafka_bootstrap}: {trap.reason(consumer, exc)}") from exc
    finally:
        consumer.close()
