"""The recovery layer against real Kafka, Redis and PostgreSQL: fleet checkpoints, hot view rebuilds."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import httpx
import pytest
import redis

from guardian.producers import GuardianProducer
from guardian.schemas.checkpoint import FLEET, TOPIC_CONFIG, CheckpointStore, key_for, pack
from guardian.settings import Settings
from guardian.sinks.redis_hot_view import STATUS_KEY
from guardian.sinks.worker_stats import WORKER_KEY_PREFIX
from guardian.stream_processors.alerts.outputs import SENT_KEY
from tests.integration.helpers import GUARDIAN, WorkerProcess, pg_fetchval, rows_for_producer, wait_for

SYMBOLS = [f"RC{i:02d}" for i in range(20)]
UNCOMPARED = {STATUS_KEY.encode(), b"guardian:hotview:rebuild-lock"}  # when and why it was rebuilt differ
# Workers' stats snapshots come and go with the workers; the marks of alerts sent expire (outputs.py).
NOT_THE_VIEW = (WORKER_KEY_PREFIX.encode(), SENT_KEY.format("").encode())


def emit_guardrails(producer: GuardianProducer, count: int, offset: int = 0) -> None:
    for n in range(offset, offset + count):
        symbol = SYMBOLS[n % len(SYMBOLS)]
        kind = n % 4
        if kind == 0:
            producer.latency_spike(symbol, observed_latency_us=100 + n, threshold_us=10_000, p50_us=50, p99_us=90,
                                   p999_us=99)  # fmt: skip
        elif kind in (1, 2):
            producer.drift(symbol, metric=f"metric{kind}", expected=1.0, observed=1.0 + n, drift_score=0.1)
        else:
            to_state = "OPEN" if n % 3 == 0 else "CLOSED"
            producer.circuit_breaker(symbol, "CLOSED", to_state, reason=f"n={n}", trip_count=n, cooldown_seconds=30)


def hot_view(client: redis.Redis) -> dict[bytes, object]:
    """Every guardian key with its whole value, by type."""
    view: dict[bytes, object] = {}
    for key in client.scan_iter(match="guardian:*", count=5000):
        if key in UNCOMPARED or key.startswith(NOT_THE_VIEW):
            continue
        kind = client.type(key)
        if kind == b"string":
            view[key] = client.get(key)
        elif kind == b"hash":
            view[key] = client.hgetall(key)
        elif kind == b"set":
            view[key] = client.smembers(key)
        elif kind == b"zset":
            view[key] = client.zrange(key, 0, -1, withscores=True)
    return view


def status(client: redis.Redis) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(STATUS_KEY).items()}


def stored_and_checkpointed(settings: Settings, client: redis.Redis, producer: GuardianProducer, count: int) -> None:
    """Emit `count` guardrail events, wait until PostgreSQL has them and a checkpoint taken after that."""
    emit_guardrails(producer, count)
    assert producer.flush(30) == 0
    wait_for(lambda: rows_for_producer(settings, producer.producer_id) == count, 90, f"{count} rows")
    stored_at_us = time.time_ns() // 1000
    wait_for(lambda: int(status(client).get("checkpoint", 0)) > stored_at_us, 30, "a checkpoint of them")


@pytest.fixture
def recovery_env(new_topic) -> dict[str, str]:
    """Its own events and checkpoint topics, checkpoints every second."""
    return {
        "GUARDIAN_EVENTS_TOPIC": new_topic("events"),
        "GUARDIAN_CHECKPOINTS_TOPIC": new_topic("checkpoints", partitions=1, config=TOPIC_CONFIG),
        "GUARDIAN_CHECKPOINT_INTERVAL_S": "1",
    }


def _silence(client: redis.Redis) -> None:
    body = {"matchers": {"symbol": "RC03"}, "expires_at_us": (time.time() + 3600) * 1_000_000, "comment": "test"}
    client.hset("guardian:silences", "recovery-test", json.dumps(body))


def test_a_hot_view_rebuilt_after_flushall_equals_the_one_lost(settings: Settings, recovery_env, tmp_path):
    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    worker = WorkerProcess(recovery_env["GUARDIAN_EVENTS_TOPIC"], tmp_path, extra_env=recovery_env).start()
    producer_id = f"recovery-{uuid.uuid4().hex[:8]}"
    try:
        _silence(client)
        with GuardianProducer(settings, producer_id=producer_id, topic=recovery_env["GUARDIAN_EVENTS_TOPIC"],
                              spool_dir=tmp_path / "spool") as producer:  # fmt: skip
            stored_and_checkpointed(settings, client, producer, 4000)
            emit_guardrails(producer, 1000, offset=4000)  # the tail: after the checkpoint
            assert producer.flush(30) == 0
        wait_for(lambda: rows_for_producer(settings, producer_id) == 5000, 90, "the tail's rows")
        worker.stop()  # so that what is compared is not moving, and no worker rebuilds on its own
        before = hot_view(client)
        assert any(k.startswith(b"guardian:drift:") for k in before) and b"guardian:silences" in before
        assert client.scard("guardian:alerts:active") > 0  # breakers OPEN fired alerts; their keys count too

        client.flushall()
        env = {**os.environ, **recovery_env, "GUARDIAN_WORKER_GROUP": worker.group}
        rebuilt = subprocess.run([GUARDIAN, "recover", "hot-view", "--reason", "test"], env=env,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "from checkpoint" in rebuilt.stdout, rebuilt.stdout
        after = hot_view(client)
        assert set(after) == set(before), set(before) ^ set(after)
        differing = [key for key in before if before[key] != after[key]]
        assert differing == []
        assert status(client)["state"] == "ready" and status(client)["window"] == "complete"
        audited = pg_fetchval(
            settings.postgres_dsn,
            "SELECT detail->>'source' FROM guardian_audit WHERE action = 'recover hot-view' ORDER BY id DESC LIMIT 1",
        )
        assert audited == "checkpoint"
    finally:
        worker.stop()


def test_a_worker_rebuilds_a_flushed_hot_view_by_itself_while_ingesting(settings: Settings, recovery_env, tmp_path):
    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    worker = WorkerProcess(recovery_env["GUARDIAN_EVENTS_TOPIC"], tmp_path, extra_env=recovery_env).start()
    producer_id = f"recovery-{uuid.uuid4().hex[:8]}"
    try:
        with GuardianProducer(settings, producer_id=producer_id, topic=recovery_env["GUARDIAN_EVENTS_TOPIC"],
                              spool_dir=tmp_path / "spool") as producer:  # fmt: skip
            stored_and_checkpointed(settings, client, producer, 2000)
            expected = client.get("guardian:latest:RC05:DRIFT_MONITOR")
            client.flushall()
            emit_guardrails(producer, 400, offset=2000)  # ingestion goes on during the rebuild
            assert producer.flush(30) == 0

        def rebuilt() -> bool:
            return status(client).get("window") == "complete" and client.exists("guardian:recent:RC05")

        wait_for(rebuilt, 60, "the worker to rebuild the view")
        newest = json.loads(client.get("guardian:latest:RC05:DRIFT_MONITOR"))
        assert newest["sequence"] > json.loads(expected)["sequence"]  # current: the events sent meanwhile too
        wait_for(lambda: client.zcard("guardian:recent:RC05") == 2400 // len(SYMBOLS), 30, "the whole 24 h window")
        finished = 'guardian_recovery_actions_total{action="hot view rebuild",outcome="finished"} 1.0'
        # The worker looks at its rebuild every few seconds: the count and /healthz follow then.
        wait_for(lambda: finished in httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text, 15,
                 "the rebuild counted")  # fmt: skip
        assert httpx.get(f"http://127.0.0.1:{worker.port}/healthz", timeout=5).json()["hot_view"] == "ready"
        assert "guardian_recovery_hot_view_rebuilding 0.0" in httpx.get(f"http://127.0.0.1:{worker.port}/metrics").text
        actor = pg_fetchval(
            settings.postgres_dsn,
            "SELECT actor FROM guardian_audit WHERE action = 'recover hot-view' ORDER BY id DESC LIMIT 1",
        )
        assert str(actor).startswith("worker:")
        assert worker.alive(), worker.log()[-3000:]
    finally:
        worker.stop()


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(settings: Settings, new_topic):
    topic = new_topic("checkpoints", partitions=1, config=TOPIC_CONFIG)
    store = CheckpointStore(settings.model_copy(update={"checkpoints_topic": topic}))
    owner = f"group-{uuid.uuid4().hex[:6]}"
    store.write(key_for(FLEET, owner, 0), pack(FLEET, owner, {"n": 1}, checkpoint_id=1, offsets={0: 10}))
    newest = bytearray(pack(FLEET, owner, {"n": 2}, checkpoint_id=2, offsets={0: 20}))
    newest[-40] ^= 0xFF  # a flipped bit in the body: the checksum no longer matches
    store.write(key_for(FLEET, owner, 1), bytes(newest))
    chosen, problems = store.latest_with_problems(FLEET, owner)
    assert chosen is not None and chosen.id == 1 and chosen.state == {"n": 1} and chosen.offsets == {0: 10}
    assert len(problems) == 1 and f"{FLEET}/{owner}/1" in problems[0]
    env = {**os.environ, "GUARDIAN_CHECKPOINTS_TOPIC": topic}
    listing = subprocess.run([GUARDIAN, "recover", "checkpoints"], env=env, capture_output=True, text=True, timeout=60)
    assert "CORRUPT" in listing.stdout and "id 1" in listing.stdout
    forgot = subprocess.run([GUARDIAN, "recover", "checkpoints", "--forget", f"{FLEET}/{owner}"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert forgot.returncode == 0 and "forgot 2 checkpoint(s)" in forgot.stdout, forgot.stdout + forgot.stderr
    assert store.latest_with_problems(FLEET, owner) == (None, [])  # tombstones: as if compacted away
    listing = subprocess.run([GUARDIAN, "recover", "checkpoints"], env=env, capture_output=True, text=True, timeout=60)
    assert owner not in listing.stdout


def test_a_hot_view_older_than_the_newest_checkpoint_is_rebuilt(settings: Settings, recovery_env, tmp_path):
    """Redis came back from an old snapshot: its status names a checkpoint older than the newest written."""
    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    worker = WorkerProcess(recovery_env["GUARDIAN_EVENTS_TOPIC"], tmp_path, extra_env=recovery_env).start()
    try:
        with GuardianProducer(
            settings,
            producer_id=f"recovery-{uuid.uuid4().hex[:8]}",
            topic=recovery_env["GUARDIAN_EVENTS_TOPIC"],
            spool_dir=tmp_path / "spool",
        ) as producer:
            emit_guardrails(producer, 200)  # fmt: skip
        began_us = time.time_ns() // 1000
        wait_for(lambda: int(status(client).get("checkpoint", 0)) > began_us, 30, "a checkpoint")
        # What an old RDB snapshot would hold: an old checkpoint id, and nothing yet of RC07's breaker.
        client.delete("guardian:latest:RC07:CIRCUIT_BREAKER", "guardian:seq:RC07:CIRCUIT_BREAKER",
                      "guardian:breaker:RC07")  # fmt: skip
        client.hset(STATUS_KEY, "checkpoint", 1)

        def rebuilt() -> bool:
            now = status(client)
            return int(now.get("checkpoint", 0)) > began_us and now.get("window") == "complete"

        wait_for(rebuilt, 60, "the stale view rebuilt")
        assert client.exists("guardian:latest:RC07:CIRCUIT_BREAKER", "guardian:breaker:RC07") == 2
        assert "older than" in worker.log()
    finally:
        worker.stop()


def test_a_checkpoint_of_a_view_lost_while_it_was_read_is_dropped(settings: Settings, recovery_env, monkeypatch):
    """FLUSHALL between the checkpoint's look at the status and its dump: the dump holds only what was written
    since, and the next rebuild would start from it as the newest checkpoint (keys of quiet symbols gone)."""
    import asyncio

    import redis.asyncio as redis_async

    from guardian.stream_processors.recovery import fleet, state

    fleet_settings = settings.model_copy(update={
        "events_topic": recovery_env["GUARDIAN_EVENTS_TOPIC"],
        "checkpoints_topic": recovery_env["GUARDIAN_CHECKPOINTS_TOPIC"],
        "worker_group": f"ckpt-race-{uuid.uuid4().hex[:6]}",
    })  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    client.set("guardian:latest:QUIET:CIRCUIT_BREAKER", "{}")
    client.hset(STATUS_KEY, mapping={"state": "ready", "window": "complete", "since": 1})
    dump = state.dump

    def dump_then_lose(reader: redis.Redis) -> dict:
        body = dump(reader)
        reader.flushall()
        return body

    async def checkpoint() -> int | None:
        aclient = redis_async.Redis.from_url(settings.redis_url)
        try:
            return await fleet.FleetRecovery(fleet_settings, aclient, lambda: [0], {}).checkpoint()
        finally:
            await aclient.aclose()

    monkeypatch.setattr(state, "dump", dump_then_lose)
    assert asyncio.run(checkpoint()) is None
    assert CheckpointStore(fleet_settings).latest(FLEET, fleet_settings.worker_group) is None
    assert not client.exists(STATUS_KEY)  # left lost, for the leader's watch to rebuild

    monkeypatch.setattr(state, "dump", dump)
    client.hset(STATUS_KEY, mapping={"state": "ready", "window": "complete", "since": 2})
    written = asyncio.run(checkpoint())
    assert written is not None
    assert CheckpointStore(fleet_settings).latest(FLEET, fleet_settings.worker_group).id == written
