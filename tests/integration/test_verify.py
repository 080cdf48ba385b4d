"""`guardian verify` against a live worker, real Kafka, PostgreSQL and Redis: it finds exactly the faults
injected (rows deleted, hot view keys changed, a producer's sequence gap) and `--repair` mends what Kafka
can give back.

The worker and the verifier get a database and a Redis database of their own: the verifier looks at every
row stored from the verified offsets, and other tests' topics reuse the same offset numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from guardian.producers import GuardianProducer
from guardian.schemas.codec import EventCodec
from guardian.settings import Settings
from tests.integration.helpers import GUARDIAN, WorkerProcess, pg_fetchval, scratch_database, wait_for
from tests.integration.test_alerts import AlertsTopic
from tests.integration.test_recovery import emit_guardrails

EVENTS = 3000
ISOLATED_REDIS_DB = 7


@pytest.fixture
def isolated(settings: Settings, new_topic) -> Iterator[dict[str, str]]:
    """Environment of a worker and CLI with their own events topic, database and Redis database."""
    redis_url = urlunsplit(urlsplit(settings.redis_url)._replace(path=f"/{ISOLATED_REDIS_DB}"))
    redis.Redis.from_url(redis_url).flushdb()
    with scratch_database(settings, "guardian_verify") as db:
        yield {**db.env(), "GUARDIAN_EVENTS_TOPIC": new_topic("verify"), "GUARDIAN_REDIS_URL": redis_url}


def _verify(env: dict[str, str], *args: str) -> tuple[int, dict]:
    result = subprocess.run([GUARDIAN, "verify", "--since", "10m", "--settle", "2s", "--json", *args],
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


def _rows(env: dict[str, str]) -> int:
    return int(pg_fetchval(env["GUARDIAN_POSTGRES_DSN"], "SELECT count(*) FROM guardian_events"))  # type: ignore[arg-type]


def _admin(env: dict[str, str]) -> str:
    return env["GUARDIAN_POSTGRES_ADMIN_DSN"]


def _gappy_events(settings: Settings, topic: str, producer_id: str, lost: int) -> int:
    """A producer's events 1..50 sent by a plain confluent-kafka producer with hand-made Avro, one lost."""
    codec = EventCodec()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    now_us = time.time_ns() // 1000
    sent = 0
    for n in range(1, 51):
        if n == lost:
            continue
        producer.produce(topic, codec.encode({
            "event_id": str(uuid.uuid4()), "producer_id": producer_id, "sequence": (7 << 32) | n, "host": "raw",
            "symbol": "GAPPY", "detector": "DRIFT_MONITOR", "event_time": now_us + n, "severity": "INFO",
            "schema_version": 1, "payload": ("io.guardian.events.Drift", {
                "metric": "slippage", "expected": 0.5, "observed": 0.6, "drift_score": 0.1, "window_seconds": 60}),
        }), b"GAPPY")  # fmt: skip
        sent += 1
    assert producer.flush(30) == 0
    return sent


def test_verify_finds_exactly_the_injected_faults_and_repair_mends_them(settings: Settings, isolated, tmp_path):
    topic = isolated["GUARDIAN_EVENTS_TOPIC"]
    worker = WorkerProcess(topic, tmp_path, extra_env=isolated).start()
    client = redis.Redis.from_url(isolated["GUARDIAN_REDIS_URL"])
    env = {**isolated, "GUARDIAN_WORKER_GROUP": worker.group}
    try:
        with GuardianProducer(settings, producer_id=f"verify-{uuid.uuid4().hex[:6]}", topic=topic,
                              spool_dir=tmp_path / "spool") as producer:  # fmt: skip
            emit_guardrails(producer, EVENTS)
            assert producer.flush(30) == 0
        wait_for(lambda: _rows(env) == EVENTS, 120, f"{EVENTS} rows")

        code, clean = _verify(env)
        assert code == 0 and clean["ok"], clean
        assert clean["events"] == EVENTS and clean["rows_checked"] == EVENTS, clean
        assert clean["keys_checked"] == 20 + 5  # a latest key for each of 20 symbols, a breaker for 5 of them

        # Partitions commit apart: a group whose commits stop at a different point in each partition cuts the
        # producer's sequence unevenly, and that is no gap.
        cut = _uneven_commits(settings, topic, f"cut-{uuid.uuid4().hex[:6]}")
        code, partial = _verify({**env, "GUARDIAN_WORKER_GROUP": cut["group"]})
        assert code == 0 and partial["ok"] and partial["events"] == cut["events"], partial

        # The faults: 100 rows deleted, 5 keys changed (3 to an older event of their key, 2 to garbage), and a
        # producer whose 25th event never reached Kafka.
        deleted = asyncio.run(_delete_random_rows(_admin(env), 100))
        changed = asyncio.run(_change_keys(env["GUARDIAN_POSTGRES_DSN"], client, stale=3, garbage=2))
        gappy = f"gappy-{uuid.uuid4().hex[:6]}"
        sent = _gappy_events(settings, topic, gappy, lost=25)
        wait_for(lambda: _rows(env) == EVENTS - 100 + sent, 60, "the gappy producer's rows")

        code, found = _verify(env)
        assert code == 1 and not found["ok"]
        assert found["mismatches"] == {"missing_row": 100, "lost_sequence": 1, "duplicate_sequence": 0,
                                       "stale_key": 3, "corrupt_key": 2, "missing_key": 0}, found  # fmt: skip
        assert {tuple(m) for m in found["missing_rows"]} == deleted
        assert found["lost_sequences"] == {gappy: [[(7 << 32) | 25, (7 << 32) | 25]]}
        assert sorted(described.split(": ")[0] for described in found["keys"]) == sorted(changed), found["keys"]

        code, repaired = _verify(env, "--repair")
        # What Kafka holds comes back; the lost sequence never reached Kafka, so it stays reported.
        assert repaired["mismatches"] == {"missing_row": 0, "lost_sequence": 1, "duplicate_sequence": 0,
                                          "stale_key": 0, "corrupt_key": 0, "missing_key": 0}, repaired  # fmt: skip
        assert code == 1
        assert _rows(env) == EVENTS + sent
        for key in changed:
            document = orjson.loads(client.get(key))
            newest = pg_fetchval(env["GUARDIAN_POSTGRES_DSN"],
                                 "SELECT event_id::text FROM guardian_events WHERE symbol = $1 AND detector = $2"
                                 " ORDER BY event_time DESC, sequence DESC LIMIT 1", *key.split(":")[2:4])  # fmt: skip
            assert document["event_id"] == newest, key
        audited = pg_fetchval(
            env["GUARDIAN_POSTGRES_DSN"],
            "SELECT array_agg(action ORDER BY id) FROM guardian_audit WHERE action LIKE 'verify%'",
        )
        assert audited == ["verify", "verify", "verify", "verify --repair"]
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()


def _uneven_commits(settings: Settings, topic: str, group: str) -> dict:
    """Commit offsets for `group` at a different fraction of each partition's end."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(12)}
        cuts = [TopicPartition(topic, p, end * (p + 1) // 13) for p, end in ends.items()]
        consumer.commit(offsets=cuts, asynchronous=False)
    finally:
        consumer.close()
    return {"group": group, "events": sum(tp.offset for tp in cuts)}


async def _delete_random_rows(dsn: str, count: int) -> set[tuple[int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT kafka_partition, kafka_offset FROM guardian_events")
        chosen = random.sample([(r[0], r[1]) for r in rows], count)
        await conn.execute("DELETE FROM guardian_events e USING unnest($1::int[], $2::int8[]) AS d(p, o)"
                           " WHERE e.kafka_partition = d.p AND e.kafka_offset = d.o",
                           [p for p, _ in chosen], [o for _, o in chosen])  # fmt: skip
        return set(chosen)
    finally:
        await conn.close()


async def _change_keys(dsn: str, client: redis.Redis, stale: int, garbage: int) -> list[str]:
    """Set `stale` latest keys to an older event of their key and `garbage` more to bytes that are no event."""
    conn = await asyncpg.connect(dsn)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match="guardian:latest:RC*", count=1000))
        chosen = random.sample(keys, stale + garbage)
        for key in chosen[:stale]:
            _, _, symbol, detector = key.split(":")
            older = await conn.fetchval(
                "SELECT event_id::text FROM guardian_events WHERE symbol = $1 AND detector = $2"
                " ORDER BY event_time DESC, sequence DESC OFFSET 3 LIMIT 1", symbol, detector)  # fmt: skip
            document = orjson.loads(client.get(key))
            row = await conn.fetchrow("SELECT sequence, (extract(epoch FROM event_time) * 1000000)::bigint AS t"
                                      " FROM guardian_events WHERE event_id = $1::uuid", older)  # fmt: skip
            client.set(key, orjson.dumps({**document, "event_id": older, "sequence": row["sequence"],
                                          "event_time": row["t"]}))  # fmt: skip
        for key in chosen[stale:]:
            client.set(key, b"\x00not an event")
        return chosen
    finally:
        await conn.close()


def test_the_fleet_verifies_itself_and_a_mismatch_fires_a_p1_alert(settings: Settings, isolated, new_topic, tmp_path):
    alerts_topic = new_topic("verify-alerts")
    env = {**isolated, "GUARDIAN_ALERTS_TOPIC": alerts_topic, "GUARDIAN_VERIFY_INTERVAL_S": "2"}
    worker = WorkerProcess(isolated["GUARDIAN_EVENTS_TOPIC"], tmp_path, extra_env=env).start()
    client = redis.Redis.from_url(isolated["GUARDIAN_REDIS_URL"])
    alerts = AlertsTopic(settings, alerts_topic)
    try:
        topic = isolated["GUARDIAN_EVENTS_TOPIC"]
        with GuardianProducer(settings, producer_id=f"watch-{uuid.uuid4().hex[:6]}", topic=topic,
                              spool_dir=tmp_path / "spool") as producer:  # fmt: skip
            emit_guardrails(producer, 400)
            assert producer.flush(30) == 0
        wait_for(lambda: _rows(isolated) == 400, 60, "400 rows")
        wait_for(
            lambda: 'guardian_consistency_runs_total{outcome="ok"}' in _metrics(worker), 60, "a clean verification"
        )
        assert 'guardian_consistency_mismatches{kind="corrupt_key"} 0.0' in _metrics(worker)

        client.set("guardian:latest:RC03:CIRCUIT_BREAKER", b"not an event")
        fired = wait_for(lambda: _consistency_alerts(alerts, "FIRING"), 60, "the consistency alert")
        assert fired[0]["severity"] == "P1" and fired[0]["labels"] == {"kind": "corrupt_key"}, fired
        assert 'guardian_consistency_mismatches{kind="corrupt_key"} 1.0' in _metrics(worker)

        code, _ = _verify({**isolated, "GUARDIAN_WORKER_GROUP": worker.group}, "--repair")
        assert code == 0
        wait_for(lambda: _consistency_alerts(alerts, "RESOLVED"), 60, "the alert resolved by a clean run")
        assert len(_consistency_alerts(alerts, "FIRING")) == 1, "fired once, not at every run"
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()


def _metrics(worker: WorkerProcess) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def _consistency_alerts(alerts: AlertsTopic, status: str) -> list[dict]:
    return [a for a in alerts.read() if a["rule"] == "consistency_mismatch" and a["status"] == status]
