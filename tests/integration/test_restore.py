"""A trading host's restore() against real services: each source in turn, and fail-open."""

from __future__ import annotations

import json
import shutil
import time
import uuid

import pytest
import redis

from guardian.producers import GuardianProducer
from guardian.producers.restore import restore
from guardian.schemas.checkpoint import TOPIC_CONFIG
from guardian.settings import Settings
from guardian.sinks.redis_hot_view import STATUS_KEY
from tests.integration.helpers import WorkerProcess, rows_for_producer, wait_for

DEAD = "127.0.0.1:9"  # discard port: nothing listens, connections are refused at once


@pytest.fixture
def fleet(settings: Settings, new_topic, tmp_path):
    """A worker with its own topics, checkpointing every second; yields the settings a host would use."""
    env = {
        "GUARDIAN_EVENTS_TOPIC": new_topic("events"),
        "GUARDIAN_CHECKPOINTS_TOPIC": new_topic("checkpoints", partitions=1, config=TOPIC_CONFIG),
        "GUARDIAN_CHECKPOINT_INTERVAL_S": "1",
    }
    redis.Redis.from_url(settings.redis_url).flushall()
    worker = WorkerProcess(env["GUARDIAN_EVENTS_TOPIC"], tmp_path, extra_env=env).start()
    host_settings = settings.model_copy(update={
        "events_topic": env["GUARDIAN_EVENTS_TOPIC"], "checkpoints_topic": env["GUARDIAN_CHECKPOINTS_TOPIC"],
        "worker_group": worker.group,
    })  # fmt: skip
    try:
        yield host_settings, worker
    finally:
        worker.stop()


def trade(producer: GuardianProducer, symbols: list[str], round_: int) -> None:
    for symbol in symbols:
        producer.latency_spike(symbol, observed_latency_us=1000 + round_, threshold_us=5000, p50_us=200 + round_,
                               p99_us=900, p999_us=2000)  # fmt: skip
        producer.drift(symbol, metric="fill_ratio", expected=1.0, observed=1.1, drift_score=0.1 * round_)
        producer.drift(symbol, metric="slippage_bps", expected=2.0, observed=2.5, drift_score=0.2 * round_)
        producer.circuit_breaker(symbol, "CLOSED", "OPEN", reason=f"round {round_}", trip_count=round_,
                                 cooldown_seconds=30 + round_)  # fmt: skip


def checked(state, symbols: list[str], round_: int) -> None:
    assert set(state.symbols) == set(symbols)
    for symbol in symbols:
        got = state.symbols[symbol]
        assert got.breaker.state == "OPEN" and got.breaker.trip_count == round_
        assert got.breaker.cooldown_seconds == 30 + round_ and got.breaker.reason == f"round {round_}"
        assert got.latency["payload"]["p50_us"] == 200 + round_
        assert sorted(got.drift) == ["fill_ratio", "slippage_bps"]
        assert got.drift["slippage_bps"]["payload"]["drift_score"] == pytest.approx(0.2 * round_)


def test_restore_from_each_source_in_turn(fleet, tmp_path):
    settings, worker = fleet
    symbols = [f"RS{i:02d}" for i in range(30)]
    producer_id = f"host-{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "host-spool"
    client = redis.Redis.from_url(settings.redis_url)
    with GuardianProducer(settings, producer_id=producer_id, spool_dir=spool) as host:
        trade(host, symbols, 1)
        host.checkpoint({"windows": {"RS00": [1, 2, 3]}, "round": 1})
        assert host.flush(30) == 0
    wait_for(lambda: rows_for_producer(settings, producer_id) == 120, 60, "120 rows")

    # 1. The hot view is ready: it answers, and the snapshot comes back from the spool directory.
    with GuardianProducer(settings, producer_id=producer_id, spool_dir=spool) as host:
        state = host.restore(symbols)
    assert (state.source, state.snapshot_source, state.degraded) == ("hot_view", "local", False)
    assert state.snapshot == {"windows": {"RS00": [1, 2, 3]}, "round": 1}
    assert state.as_of_us > 0 and state.as_of_event
    checked(state, symbols, 1)

    # 2. Redis lost, no worker to rebuild it: the newest fleet checkpoint plus the events after it.
    stored_at_us = time.time_ns() // 1000
    wait_for(lambda: int(client.hget(STATUS_KEY, "checkpoint") or 0) > stored_at_us, 30, "a fleet checkpoint")
    worker.stop()
    client.flushall()
    with GuardianProducer(settings, producer_id=producer_id, spool_dir=spool) as host:
        trade(host, symbols, 2)  # after the checkpoint: only the Kafka tail has these
        assert host.flush(30) == 0
    shutil.rmtree(spool)  # the host's disk is lost too: its snapshot comes from Kafka
    with GuardianProducer(settings, producer_id=producer_id, spool_dir=spool) as host:
        state = host.restore(symbols)
    assert (state.source, state.snapshot_source) == ("checkpoint+kafka", "kafka"), state.problems
    assert state.snapshot == {"windows": {"RS00": [1, 2, 3]}, "round": 1}
    checked(state, symbols, 2)

    # 3. Kafka down as well: PostgreSQL, which has round 1 (the worker stopped before round 2).
    down = settings.model_copy(update={"kafka_bootstrap": DEAD})
    state = restore(down, producer_id, None, symbols, 3.0)
    assert state.source == "postgresql" and not state.degraded, state.problems
    checked(state, symbols, 1)


def test_restore_with_every_store_down_is_degraded_within_its_deadline(settings: Settings, tmp_path):
    down = settings.model_copy(update={
        "kafka_bootstrap": DEAD, "redis_url": f"redis://{DEAD}/0", "postgres_dsn": f"postgresql://guardian@{DEAD}/x",
    })  # fmt: skip
    with GuardianProducer(down, producer_id=f"host-{uuid.uuid4().hex[:8]}", spool_dir=tmp_path / "s") as host:
        began = time.monotonic()
        state = host.restore(["AAA"], timeout_s=1.0)
        took = time.monotonic() - began
        assert state.degraded and state.source == "none" and state.symbols == {}
        assert took < 1.3
        assert any(p.startswith("hot_view:") for p in state.problems)
        assert host.stats()["spooled"] + host.pending() >= 1  # the restore event waits for Kafka
        host.close(timeout=0.5)


def test_a_degraded_restore_fires_the_p0_and_a_complete_one_resolves_it(fleet, tmp_path):
    settings, _ = fleet
    client = redis.Redis.from_url(settings.redis_url)
    producer_id = f"host-{uuid.uuid4().hex[:8]}"
    # Kafka reachable (the event must get out), but no hot view, no checkpoint and no database for this host.
    blind = settings.model_copy(update={
        "redis_url": f"redis://{DEAD}/0", "postgres_dsn": f"postgresql://g@{DEAD}/x",
        "checkpoints_topic": f"missing.{uuid.uuid4().hex[:8]}",
    })  # fmt: skip
    with GuardianProducer(blind, producer_id=producer_id, spool_dir=tmp_path / "s") as host:
        assert host.restore(["AAA"], timeout_s=2.0).degraded
        assert host.flush(30) == 0

    def alert() -> dict | None:
        for fingerprint in client.smembers("guardian:alerts:active"):
            body = client.get(f"guardian:alert:{fingerprint.decode()}")
            if body and producer_id.encode() in body:
                return json.loads(body)
        return None

    fired = wait_for(alert, 60, "the P0 alert")
    assert fired["severity"] == "P0" and fired["rule"] == "host-started-without-state"
    assert "started without its guardrail state" in fired["summary"]
    with GuardianProducer(settings, producer_id=producer_id, spool_dir=tmp_path / "s") as host:
        assert not host.restore(["AAA"]).degraded
        assert host.flush(30) == 0
    wait_for(lambda: alert() is None, 60, "the alert to resolve")
