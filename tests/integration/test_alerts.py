"""Alerts end to end: a real worker, Kafka, Redis, and a webhook receiver on a local HTTP server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import yaml
from confluent_kafka import Consumer

from guardian.producers import GuardianProducer
from guardian.producers.producer import EPOCH_SHIFT
from guardian.schemas.codec import EventCodec, load_alert_schema
from guardian.settings import Settings
from guardian.stream_processors.alerts.engine import fingerprint
from guardian.stream_processors.alerts.outputs import ACTIVE_SET, ALERT_KEY, CHANNEL
from tests.integration.helpers import WorkerProcess, wait_for


class Receiver:
    """A webhook receiver that fails its first `fail_first` POSTs (HTTP 503), to exercise the retries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.failures_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's method name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.failures_left > 0:
                    outer.failures_left -= 1
                    self.send_response(503)
                else:
                    outer.bodies.append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts_for(self, symbol: str) -> list[dict]:
        return [a for body in self.bodies for a in body["alerts"] if a["labels"].get("symbol") == symbol]


class AlertsTopic:
    def __init__(self, settings: Settings, topic: str) -> None:
        self.codec = EventCodec(load_alert_schema())
        self.consumer = Consumer(
            {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"alerts-{uuid.uuid4().hex[:8]}",
             "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )  # fmt: skip
        self.consumer.subscribe([topic])
        self.records: list[dict] = []

    def read(self) -> list[dict]:
        for message in self.consumer.consume(1000, timeout=0.3):
            if message.error() is None:
                self.records.append(self.codec.decode(message.value()))
        return self.records


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(fail_first=2)
    yield server
    server.server.shutdown()


def write_rules(path: Path, receiver_url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "repeat_interval_s": 3600,
                "receivers": {"P0": [{"url": receiver_url, "max_attempts": 5}]},
                "rules": [{"name": "circuit-breaker-open", "kind": "breaker_open", "severity": "P0"}],
            }
        )
    )
    return path


def test_breaker_open_fires_one_p0_everywhere_and_closed_resolves_it(settings: Settings, new_topic, tmp_path, receiver):
    events_topic, alerts_topic = new_topic("events"), new_topic("alerts")
    rules = write_rules(tmp_path / "rules.yaml", receiver.url)
    worker = WorkerProcess(
        events_topic, tmp_path,
        extra_env={"GUARDIAN_ALERTS_TOPIC": alerts_topic, "GUARDIAN_ALERT_RULES_FILE": str(rules)},
    ).start()  # fmt: skip
    symbol = f"ALRT{uuid.uuid4().hex[:6].upper()}"
    expected_fp = fingerprint("circuit-breaker-open", {"symbol": symbol})
    client = redis.Redis.from_url(settings.redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(CHANNEL)
    topic = AlertsTopic(settings, alerts_topic)
    published: list[dict] = []

    def on_channel() -> list[dict]:
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            if message["type"] == "message":
                body = json.loads(message["data"])
                if body["symbol"] == symbol:
                    published.append(body)
        return published

    try:
        with GuardianProducer(settings, topic=events_topic, spool_dir=tmp_path / "spool") as producer:
            producer.circuit_breaker(symbol, "CLOSED", "OPEN", reason="5 spikes in 10 s", trip_count=1)
            producer.flush(10)
            firing = wait_for(lambda: [r for r in topic.read() if r["symbol"] == symbol], 60, "the P0 on the topic")
            assert [(r["rule"], r["severity"], r["status"], r["fingerprint"]) for r in firing] == [
                ("circuit-breaker-open", "P0", "FIRING", expected_fp)
            ]
            wait_for(lambda: client.sismember(ACTIVE_SET, expected_fp), 10, "the alert in the Redis active set")
            assert json.loads(client.get(ALERT_KEY.format(expected_fp)))["status"] == "FIRING"
            assert [b["status"] for b in wait_for(on_channel, 10, "the alert on the pub/sub channel")] == ["FIRING"]
            hooks = wait_for(lambda: receiver.alerts_for(symbol), 30, "the webhook (after two HTTP 503s)")
            assert [(a["status"], a["labels"]["alertname"], a["fingerprint"]) for a in hooks] == [
                ("firing", "circuit-breaker-open", expected_fp)
            ]
            assert receiver.failures_left == 0  # it was retried past the failures

            # The same condition again: no second alert. Wait until the worker has seen it (the hot view).
            producer.circuit_breaker(symbol, "HALF_OPEN", "OPEN", reason="tripped again", trip_count=2)
            producer.flush(10)
            second = str(producer.epoch << EPOCH_SHIFT | 2).encode()  # the run's second event
            wait_for(lambda: client.hget(f"guardian:seq:{symbol}:CIRCUIT_BREAKER", producer.producer_id) == second, 30,
                     "the second OPEN in the hot view")  # fmt: skip
            producer.circuit_breaker(symbol, "OPEN", "CLOSED", reason="recovered", trip_count=2)
            producer.flush(10)
            resolved = wait_for(
                lambda: [r for r in topic.read() if r["symbol"] == symbol and r["status"] == "RESOLVED"], 60,
                "the RESOLVED alert on the topic",
            )  # fmt: skip
        statuses = [r["status"] for r in topic.records if r["symbol"] == symbol]
        assert statuses == ["FIRING", "RESOLVED"], "the second OPEN must not fire again"
        assert resolved[0]["fingerprint"] == expected_fp and resolved[0]["ends_at"] is not None
        wait_for(lambda: not client.sismember(ACTIVE_SET, expected_fp), 10, "the alert leaving the active set")
        on_pubsub = wait_for(lambda: len(on_channel()) >= 2 and published, 10, "RESOLVED on pub/sub")
        assert [b["status"] for b in on_pubsub] == ["FIRING", "RESOLVED"]
        wait_for(lambda: len(receiver.alerts_for(symbol)) >= 2, 30, "the resolved webhook")
        assert [a["status"] for a in receiver.alerts_for(symbol)] == ["firing", "resolved"]
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()
        pubsub.close()
        topic.consumer.close()


def test_a_silenced_alert_is_recorded_but_not_notified(settings: Settings, new_topic, tmp_path, receiver):
    events_topic, alerts_topic = new_topic("events"), new_topic("alerts")
    rules = write_rules(tmp_path / "rules.yaml", receiver.url)
    symbol = f"SLNC{uuid.uuid4().hex[:6].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    silence_id = f"test-{uuid.uuid4().hex[:8]}"
    expires_at_us = int((time.time() + 600) * 1e6)
    body = {"matchers": {"symbol": symbol}, "expires_at_us": expires_at_us}
    client.hset("guardian:silences", silence_id, json.dumps(body))
    worker = WorkerProcess(
        events_topic, tmp_path,
        extra_env={"GUARDIAN_ALERTS_TOPIC": alerts_topic, "GUARDIAN_ALERT_RULES_FILE": str(rules)},
    ).start()  # fmt: skip
    topic = AlertsTopic(settings, alerts_topic)
    try:
        with GuardianProducer(settings, topic=events_topic, spool_dir=tmp_path / "spool") as producer:
            producer.circuit_breaker(symbol, "CLOSED", "OPEN", reason="silenced test")
            loud = f"LOUD{uuid.uuid4().hex[:6].upper()}"
            producer.circuit_breaker(loud, "CLOSED", "OPEN", reason="not silenced")
            producer.flush(10)
        wait_for(lambda: {r["symbol"] for r in topic.read()} >= {symbol, loud}, 60, "both alerts on the topic")
        wait_for(lambda: receiver.alerts_for(loud), 30, "the webhook of the alert that is not silenced")
        stored = json.loads(client.get(ALERT_KEY.format(fingerprint("circuit-breaker-open", {"symbol": symbol}))))
        assert stored["silenced"] is True and stored["status"] == "FIRING"
        assert receiver.alerts_for(symbol) == []  # checked after the other alert's webhook arrived
    finally:
        client.hdel("guardian:silences", silence_id)
        worker.stop()
        topic.consumer.close()


def test_a_bad_rules_file_stops_the_worker_naming_rule_and_field(settings: Settings, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"name": "burst", "kind": "latency_spikes", "severity": "P0",
                                                "min_spikes": 3, "window_s": -1}]}))  # fmt: skip
    worker = WorkerProcess("unused", tmp_path, extra_env={"GUARDIAN_ALERT_RULES_FILE": str(rules)}).start()
    assert worker.process is not None and worker.process.wait(timeout=60) != 0
    assert "rule 'burst' (rules[0]), field 'window_s'" in worker.log()


def test_alert_state_survives_a_worker_restart(settings: Settings, new_topic, tmp_path, receiver):
    """The successor (new process, new data dir) restores the alert table from its changelog: the
    breaker that is still OPEN does not fire again, and its CLOSED resolves the original alert."""
    events_topic, alerts_topic = new_topic("events"), new_topic("alerts")
    rules = write_rules(tmp_path / "rules.yaml", receiver.url)
    env = {"GUARDIAN_ALERTS_TOPIC": alerts_topic, "GUARDIAN_ALERT_RULES_FILE": str(rules)}
    group = f"test-restart-{uuid.uuid4().hex[:8]}"
    symbol = f"RSTR{uuid.uuid4().hex[:6].upper()}"
    topic = AlertsTopic(settings, alerts_topic)
    first = WorkerProcess(events_topic, tmp_path, group=group, extra_env=env).start()
    second = WorkerProcess(events_topic, tmp_path, group=group, extra_env=env)
    try:
        with GuardianProducer(settings, topic=events_topic, spool_dir=tmp_path / "spool") as producer:
            producer.circuit_breaker(symbol, "CLOSED", "OPEN", reason="first")
            producer.flush(10)
            wait_for(lambda: [r for r in topic.read() if r["symbol"] == symbol], 60, "the first P0")
            first.stop()
            second.start()
            producer.circuit_breaker(symbol, "HALF_OPEN", "OPEN", reason="still open after the restart")
            producer.circuit_breaker(symbol, "OPEN", "CLOSED", reason="recovered")
            producer.flush(10)
        wait_for(lambda: [r for r in topic.read() if r["symbol"] == symbol and r["status"] == "RESOLVED"], 90,
                 "the RESOLVED alert from the second worker")  # fmt: skip
        assert [r["status"] for r in topic.records if r["symbol"] == symbol] == ["FIRING", "RESOLVED"]
        assert second.alive(), second.log()[-3000:]
    finally:
        first.stop()
        second.stop()
        topic.consumer.close()
