"""A replay of the whole topic: the fleet's group reset to the earliest offsets, as Kafka's
`kafka-consumer-groups --reset-offsets --to-earliest --execute` does (through the admin API).

The fleet must catch up and commit, re-send no alert notification, duplicate no row and move no
hot-view key backwards.
"""

from __future__ import annotations

import time
import uuid

import redis
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from guardian.producers import GuardianProducer
from guardian.settings import Settings
from tests.integration.helpers import WorkerProcess, rows_for_producer, wait_for
from tests.integration.test_alerts import AlertsTopic

EVENTS = 20_000
SYMBOLS = 8


def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"ends-{uuid.uuid4().hex[:6]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def _committed(admin: AdminClient, group: str, topic: str) -> dict[int, int]:
    request = ConsumerGroupTopicPartitions(group)
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.topic == topic}


def _caught_up(admin: AdminClient, group: str, topic: str, ends: dict[int, int]) -> bool:
    """Committed up to the end of every partition that holds records (empty ones have no commit)."""
    committed = _committed(admin, group, topic)
    return all(committed.get(p) == end for p, end in ends.items() if end > 0)


def _hot_view(client: redis.Redis, producer_id: str) -> dict[str, tuple]:
    view = {}
    for key in client.scan_iter(match="guardian:seq:RPL*"):
        view[key.decode()] = int(client.hget(key, producer_id) or -1)
    for key in client.scan_iter(match="guardian:latest:RPL*"):
        view[key.decode()] = client.get(key)
    return view


def _read_for(alerts: AlertsTopic, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alerts.read()


def test_a_replay_of_the_whole_topic_catches_up_without_repaging_duplicating_or_going_back(
    settings: Settings, new_topic, tmp_path
):
    events_topic, alerts_topic = new_topic("replay"), new_topic("replay-alerts")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"repeat_interval_s": 3600, "rules": [
        {"name": "breaker", "kind": "breaker_open", "severity": "P0"},
        {"name": "spikes", "kind": "latency_spikes", "severity": "P0", "min_spikes": 3, "window_s": 10},
    ]}))  # fmt: skip
    env = {"GUARDIAN_ALERTS_TOPIC": alerts_topic, "GUARDIAN_ALERT_RULES_FILE": str(rules)}
    group = f"test-worker-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(events_topic, tmp_path, group=group, extra_env=env).start()
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    client = redis.Redis.from_url(settings.redis_url)
    alerts = AlertsTopic(settings, alerts_topic)
    tag = uuid.uuid4().hex[:5].upper()
    try:
        producer_id = f"replay-{tag}"
        spool = tmp_path / "spool"
        with GuardianProducer(settings, producer_id=producer_id, topic=events_topic, spool_dir=spool) as producer:
            for i in range(EVENTS):
                symbol = f"RPL{tag}{i % SYMBOLS}"
                breaker = f"RPL{tag}{i // 1000 % SYMBOLS}"
                if i % 1000 == 0:  # breakers trip and recover; spike bursts come and go
                    producer.circuit_breaker(breaker, "CLOSED", "OPEN", reason="burst", trip_count=i)
                elif i % 1000 == 500:
                    producer.circuit_breaker(breaker, "OPEN", "CLOSED", reason="calm", trip_count=i)
                elif i % 1000 < 20:
                    producer.latency_spike(symbol, observed_latency_us=9_000, threshold_us=1_000, p50_us=300,
                                           p99_us=800, p999_us=1_500)  # fmt: skip
                else:
                    producer.drift(symbol, metric="m", expected=1.0, observed=1.1, drift_score=0.1)
            assert producer.flush(60) == 0
        ends = _end_offsets(settings, events_topic)
        wait_for(lambda: _caught_up(admin, group, events_topic, ends), 120, "the live run committed")
        wait_for(lambda: rows_for_producer(settings, producer_id) == EVENTS, 60, "every row stored")
        wait_for(lambda: len(alerts.read()) >= 2 * (EVENTS // 1000), 60, "the breakers' alerts")
        _read_for(alerts, 15)  # spike bursts resolve by the clock, 10 s after their last spike
        live_count = len(alerts.records)
        assert {(r["rule"], r["status"]) for r in alerts.records} >= {("breaker", "FIRING"), ("breaker", "RESOLVED")}
        before = _hot_view(client, producer_id)
        worker.stop()

        # The reset, with Kafka's own semantics: refused while the group has members, so the worker is stopped.
        earliest = [TopicPartition(events_topic, p, 0) for p in ends]
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, earliest)])[group].result(timeout=30)
        assert set(_committed(admin, group, events_topic).values()) == {0}

        worker = WorkerProcess(events_topic, tmp_path, group=group, extra_env=env).start()
        replay_began = time.monotonic()
        wait_for(lambda: _caught_up(admin, group, events_topic, ends), 180, "the replay caught up and committed")
        print(
            f"\nreplay: {EVENTS} events caught up and committed in {time.monotonic() - replay_began:.1f} s"
            f" (worker start included); alerts before {live_count}"
        )
        assert rows_for_producer(settings, producer_id) == EVENTS, "a replay must not duplicate rows"
        assert _hot_view(client, producer_id) == before, "the hot view moved"
        _read_for(alerts, 5)  # time for a re-sent notification to show, before asserting there is none
        assert len(alerts.records) == live_count, alerts.records[live_count:]
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()
