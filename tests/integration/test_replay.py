"""Replays of the events topic, both kinds, against a live run with alerts:

- `guardian replay`: a time range re-driven beside the fleet. A range stored already changes nothing
  (rows, hot view keys, notifications); after rows are deleted, it stores exactly those again;
- `guardian offsets reset`: the fleet's own group moved back, as Kafka's
  `kafka-consumer-groups --reset-offsets --to-earliest --execute` does: refused while the group has
  members, then acted on. The fleet must catch up and commit, re-send no alert notification, duplicate
  no row and move no hot-view key backwards.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid

import redis
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from guardian.producers import GuardianProducer
from guardian.settings import Settings
from tests.integration.helpers import GUARDIAN, WorkerProcess, pg_fetchval, rows_for_producer, wait_for
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


def _guardian(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GUARDIAN, *args], env=env, capture_output=True, text=True, timeout=300)


def _executed(env: dict[str, str]) -> subprocess.CompletedProcess[str] | None:
    """The reset with --execute; None while Kafka still counts the stopped worker as a member."""
    result = _guardian(env, "offsets", "reset", "--to-earliest", "--execute")
    return result if result.returncode == 0 else None


def _delete_rows(settings: Settings, producer_id: str, count: int) -> list[int]:
    sequences = sorted(random.sample(_sequences(settings, producer_id), count))
    pg_fetchval(
        settings.postgres_admin_dsn,  # the application's role may not delete
        "DELETE FROM guardian_events WHERE producer_id = $1 AND sequence = ANY($2)",
        producer_id,
        sequences,
    )
    return sequences


def _sequences(settings: Settings, producer_id: str, only: list[int] | None = None) -> list[int]:
    query = "SELECT coalesce(array_agg(sequence ORDER BY sequence), '{}') FROM guardian_events WHERE producer_id = $1"
    if only is not None:
        return list(pg_fetchval(settings.postgres_dsn, query + " AND sequence = ANY($2)", producer_id, only))
    return list(pg_fetchval(settings.postgres_dsn, query, producer_id))


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
        cli_env = {**os.environ, **env, "GUARDIAN_EVENTS_TOPIC": events_topic, "GUARDIAN_WORKER_GROUP": group}

        # `guardian replay` beside the live worker: a range stored already changes nothing.
        replay = _guardian(cli_env, "replay", "--from", "1h", "--quiet")
        assert replay.returncode == 0, replay.stderr
        assert (
            f"replayed {EVENTS:,} events" in replay.stdout
            and f"0 rows inserted, {EVENTS:,} already present" in (replay.stdout)
            and "0 hot view keys moved forward" in replay.stdout
        ), replay.stdout
        assert rows_for_producer(settings, producer_id) == EVENTS
        # Deleted rows come back, and only they.
        deleted = _delete_rows(settings, producer_id, 37)
        replay = _guardian(cli_env, "replay", "--from", "1h", "--quiet")
        assert f"37 rows inserted, {EVENTS - 37:,} already present" in replay.stdout, replay.stdout
        assert _sequences(settings, producer_id, deleted) == deleted
        assert rows_for_producer(settings, producer_id) == EVENTS
        assert _hot_view(client, producer_id) == before
        _read_for(alerts, 3)
        assert len(alerts.records) == live_count, alerts.records[live_count:]
        dry = _guardian(cli_env, "replay", "--from", "1h", "--dry-run")
        assert f"{EVENTS:,} events in {events_topic}" in dry.stdout, dry.stdout
        replays = pg_fetchval(settings.postgres_dsn,
                              "SELECT array_agg(detail->'outcome'->>'inserted' ORDER BY id) FROM guardian_audit"
                              " WHERE action LIKE 'replay%' AND target = $1", events_topic)  # fmt: skip
        assert replays == ["0", "37", None], replays  # each replay audited with its outcome; the dry run too

        # `guardian offsets reset`: refused while the worker is a member of the group, acted on once it stopped.
        refused = _guardian(cli_env, "offsets", "reset", "--to-earliest", "--execute")
        assert refused.returncode == 2 and "active member" in refused.stderr, refused.stderr + refused.stdout
        assert _committed(admin, group, events_topic) == {p: end for p, end in ends.items() if end > 0}
        worker.stop()
        plan = _guardian(cli_env, "offsets", "reset", "--to-earliest")
        assert f"{EVENTS:,} events to re-read in total" in plan.stdout and "plan only" in plan.stdout, plan.stdout
        assert _committed(admin, group, events_topic) == {p: end for p, end in ends.items() if end > 0}
        executed = wait_for(lambda: _executed(cli_env), 30, "the reset, once the group is empty")
        assert "moved" in executed.stdout, executed.stdout
        assert set(_committed(admin, group, events_topic).values()) == {0}
        audited = pg_fetchval(settings.postgres_dsn, "SELECT count(*) FROM guardian_audit WHERE action LIKE"
                              " 'offsets reset%' AND detail->'params'->>'mode' = '--to-earliest'"
                              " AND at > now() - interval '5 minutes'")  # fmt: skip
        assert audited >= 3  # the refused one, the plan, the executed one

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


def test_a_replay_older_than_the_topic_holds_is_refused_with_the_oldest_time(settings: Settings, new_topic, tmp_path):
    """Retention deletes from the front of each partition; Kafka's DeleteRecords does the same on demand."""
    topic = new_topic("retention", partitions=2)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(20):
        producer.produce(topic, b"not even an event", partition=i % 2, timestamp=1_700_000_000_000 + i * 60_000)
    assert producer.flush(30) == 0
    # Partition 0 keeps its last 4 records (minutes 12, 14, 16, 18); partition 1 all of them.
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 6)]).values():
        future.result(timeout=30)
    env = {**os.environ, "GUARDIAN_EVENTS_TOPIC": topic}
    refused = _guardian(env, "replay", "--from", "2023-11-14T22:13:00Z", "--dry-run")
    oldest = "2023-11-14T22:25:20.000Z"  # 1_700_000_000 s + 12 min
    assert refused.returncode == 2, refused.stdout
    assert f"no longer holds events from before {oldest} in partition(s) 0" in refused.stderr, refused.stderr
    assert "replay from then or later" in refused.stderr
    accepted = _guardian(env, "replay", "--from", oldest, "--dry-run")
    assert accepted.returncode == 0, accepted.stderr
    assert "8 events in" in accepted.stdout, accepted.stdout  # minutes 12-18 of partition 0, 13-19 of partition 1
