"""The Faust worker against real Kafka, Redis and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from confluent_kafka import Producer

from guardian.producers import GuardianProducer
from guardian.producers.producer import EPOCH_SHIFT
from guardian.settings import Settings
from guardian.stream_processors.dlq_tools import read_dlq
from tests.integration.helpers import WorkerProcess, pg_fetchval, rows_for_producer, wait_for

SYMBOLS = [f"W{i:02d}" for i in range(10)]


def emit_mix(producer: GuardianProducer, count: int) -> dict[tuple[str, str], int]:
    """Emit `count` events round-robin over symbols and detectors; returns the last sequence per key."""
    last: dict[tuple[str, str], int] = {}
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        kind = (i // len(SYMBOLS)) % 3
        if kind == 0:
            producer.latency_spike(symbol, observed_latency_us=i, threshold_us=500, p50_us=100, p99_us=300, p999_us=900)
            detector = "LATENCY_SPIKE_DETECTOR"
        elif kind == 1:
            producer.drift(symbol, metric="fill_ratio", expected=1.0, observed=1.0 + i / count, drift_score=i / count)
            detector = "DRIFT_MONITOR"
        else:
            producer.circuit_breaker(symbol, "CLOSED", "OPEN" if i % 2 else "HALF_OPEN", reason=f"r{i}")
            detector = "CIRCUIT_BREAKER"
        last[(symbol, detector)] = producer.epoch << EPOCH_SHIFT | i + 1  # the run's (i+1)-th event
    return last


@pytest.fixture
def events_topic(new_topic) -> str:
    return new_topic("events")


def test_10k_events_become_10k_rows_and_the_hot_view_holds_the_last_per_key(settings: Settings, events_topic, tmp_path):
    worker = WorkerProcess(events_topic, tmp_path).start()
    producer_id = f"worker-test-{uuid.uuid4().hex[:8]}"
    try:
        with GuardianProducer(settings, producer_id=producer_id, topic=events_topic, spool_dir=tmp_path / "spool") as p:
            last = emit_mix(p, 10_000)
            assert p.flush(30) == 0
        wait_for(lambda: rows_for_producer(settings, producer_id) >= 10_000, 90, "10k rows in PostgreSQL")
        assert rows_for_producer(settings, producer_id) == 10_000
        client = redis.Redis.from_url(settings.redis_url)
        for (symbol, detector), sequence in last.items():
            stored = json.loads(client.get(f"guardian:latest:{symbol}:{detector}"))
            assert stored["producer_id"] == producer_id
            assert stored["sequence"] == sequence, (symbol, detector)
        breaker = client.hgetall("guardian:breaker:W03")
        assert breaker[b"state"] in (b"OPEN", b"HALF_OPEN")
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()


def test_malformed_records_go_to_the_dlq_with_reasons_and_good_ones_are_stored(settings: Settings, new_topic, tmp_path):
    events_topic = new_topic("events")
    dlq_topic = new_topic("dlq", partitions=3)
    env = {"GUARDIAN_DLQ_TOPIC": dlq_topic}
    worker = WorkerProcess(events_topic, tmp_path, extra_env=env).start()
    producer_id = f"dlq-test-{uuid.uuid4().hex[:8]}"
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        with GuardianProducer(settings, producer_id=producer_id, topic=events_topic, spool_dir=tmp_path / "spool") as p:
            for i in range(10_000):
                p.drift(f"D{i % 7}", metric="m", expected=1.0, observed=2.0, drift_score=1.0)
                if i % 10 == 0:
                    kind = (i // 10) % 3
                    bad = [b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"x", b"\xc3\x01\x01"][kind]
                    raw.produce(events_topic, bad, key=b"BAD")
            assert p.flush(30) == 0
        assert raw.flush(30) == 0
        wait_for(lambda: rows_for_producer(settings, producer_id) >= 10_000, 90, "10k good rows")
        dlq_settings = settings.model_copy(update={"dlq_topic": dlq_topic})

        def dlq_when_complete() -> list | None:
            letters = read_dlq(dlq_settings, None)
            return letters if len(letters) >= 1000 else None

        letters = wait_for(dlq_when_complete, 60, "1k DLQ records")
        assert len(letters) == 1000
        reasons = {letter.headers["error.class"] for letter in letters}
        assert reasons == {"BadMagicError", "UnknownSchemaError", "TruncatedPayloadError"}
        for letter in letters:
            assert letter.headers["source.topic"] == events_topic
            assert int(letter.headers["source.offset"]) >= 0
            assert letter.headers["error.message"]
        assert {letter.value for letter in letters} == {
            b"not avro at all",
            b"\xc3\x01" + b"\x00" * 8 + b"x",
            b"\xc3\x01\x01",
        }
        assert rows_for_producer(settings, producer_id) == 10_000
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()


def test_worker_exposes_prometheus_metrics(settings: Settings, events_topic, tmp_path):
    import httpx

    worker = WorkerProcess(events_topic, tmp_path).start()
    try:
        body = wait_for(
            lambda: _get(httpx, f"http://127.0.0.1:{worker.port}/metrics"), 60, "the worker's /metrics page"
        )
        assert "guardian_worker_events_total" in body or "guardian_worker_batch_size" in body
        assert pg_fetchval(settings.postgres_dsn, "SELECT 1") == 1
    finally:
        worker.stop()


def test_a_worker_on_a_missing_topic_says_so_in_healthz(settings: Settings, new_topic, tmp_path):
    """The worker has nothing to do and restarting it would not help: it stays up and tells why."""
    import json

    import httpx

    worker = WorkerProcess(new_topic("absent", create=False), tmp_path).start()
    try:

        def consumer_error() -> dict | None:
            body = _get(httpx, f"http://127.0.0.1:{worker.port}/healthz")
            health = json.loads(body) if body else None
            return health if health and health["consumer_error"] else None

        health = wait_for(consumer_error, 60, "the worker's /healthz to report the missing topic")
        assert "Unknown topic or partition" in health["consumer_error"], health
        assert health["partitions"] == [] and health["status"] == "ok", health
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()


def _get(httpx, url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None
