"""Worker fault tolerance: stores that go away, workers that die. Nothing lost, nothing doubled."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid

import httpx
import redis

from guardian.producers import GuardianProducer
from guardian.schemas.checkpoint import TOPIC_CONFIG as CHECKPOINT_TOPIC_CONFIG
from guardian.settings import Settings
from tests.integration.helpers import GUARDIAN, WorkerProcess, pg_fetchval, rows_for_producer, wait_for


def _stack(action: str, service: str) -> None:
    result = subprocess.run([GUARDIAN, "stack", action, service], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


def _emit_steadily(settings: Settings, topic: str, producer_id: str, total: int, rate: int, spool) -> None:
    with GuardianProducer(settings, producer_id=producer_id, topic=topic, spool_dir=spool) as producer:
        began = time.monotonic()
        for i in range(total):
            producer.drift(f"F{i % 8}", metric="m", expected=1.0, observed=1.0 + i, drift_score=float(i))
            time.sleep(max(0.0, began + i / rate - time.monotonic()))
        assert producer.flush(60) == 0


def _health(worker: WorkerProcess, status: int) -> dict | None:
    """The worker's /healthz body if it answers with `status`."""
    try:
        response = httpx.get(f"http://127.0.0.1:{worker.port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == status else None


def test_postgres_then_redis_down_20s_each_mid_stream(settings: Settings, new_topic, tmp_path):
    topic = new_topic("faults")
    worker = WorkerProcess(topic, tmp_path, extra_env={"GUARDIAN_WORKER_STALL_S": "5"}).start()
    producer_id = f"faults-{uuid.uuid4().hex[:8]}"
    total = 30_000
    emitter = threading.Thread(
        target=_emit_steadily, args=(settings, topic, producer_id, total, 500, tmp_path / "spool")
    )
    try:
        emitter.start()
        wait_for(lambda: rows_for_producer(settings, producer_id) > 1000, 60, "the first rows")
        _stack("stop", "postgres")
        outage_began = time.monotonic()
        # No commit for GUARDIAN_WORKER_STALL_S while events wait: /healthz says so, and on what.
        stalled = wait_for(lambda: _health(worker, 503), 19, "/healthz to report the stall")
        assert stalled["status"] == "stalled" and "waits for stage postgres" in stalled["reason"], stalled
        time.sleep(max(0.0, 20 - (time.monotonic() - outage_began)))  # the outage itself is the point here
        _stack("start", "postgres")
        wait_for(lambda: rows_for_producer(settings, producer_id) > 12_000, 120, "rows after PostgreSQL returned")
        assert wait_for(lambda: _health(worker, 200), 30, "/healthz ok again")["reason"] == ""
        _stack("stop", "redis")
        time.sleep(20)
        _stack("start", "redis")
        emitter.join(timeout=300)
        wait_for(lambda: rows_for_producer(settings, producer_id) >= total, 180, "every row")
        assert rows_for_producer(settings, producer_id) == total  # unique rows == unique events
        assert worker.alive(), "the worker crashed:\n" + worker.log()[-3000:]
        client = redis.Redis.from_url(settings.redis_url)

        def hot_view_caught_up() -> bool:
            latest = [json.loads(client.get(f"guardian:latest:F{s}:DRIFT_MONITOR") or "{}") for s in range(8)]
            # The run's count is the sequence's low 32 bits (the high ones are its epoch).
            return all(e.get("producer_id") == producer_id and e["sequence"] & 0xFFFFFFFF > total - 8 for e in latest)

        wait_for(hot_view_caught_up, 60, "the hot view to hold the last event of every symbol")
        duplicates = pg_fetchval(
            settings.postgres_dsn,
            "SELECT count(*) - count(DISTINCT event_id) FROM guardian_events WHERE producer_id = $1",
            producer_id,
        )
        assert duplicates == 0
        assert "sink write failed; retrying" in worker.log()
    finally:
        _stack("start", "postgres")
        _stack("start", "redis")
        worker.stop()
        emitter.join(timeout=60)


def test_three_workers_one_killed_mid_batch(settings: Settings, new_topic, tmp_path):
    topic = new_topic("fleet")
    group = f"test-fleet-{uuid.uuid4().hex[:8]}"
    checkpoints = {  # on, and often: a checkpoint taken around the kill must not disturb anything
        "GUARDIAN_CHECKPOINTS_TOPIC": new_topic("checkpoints", partitions=1, config=CHECKPOINT_TOPIC_CONFIG),
        "GUARDIAN_CHECKPOINT_INTERVAL_S": "1",
        # A short session, as docs/recovery.md advises for a fast takeover (the local broker allows it).
        "GUARDIAN_WORKER_SESSION_TIMEOUT_MS": "2000",
        "GUARDIAN_WORKER_HEARTBEAT_INTERVAL_MS": "500",
    }
    workers = [WorkerProcess(topic, tmp_path, group=group, extra_env=checkpoints).start() for _ in range(3)]
    producer_id = f"fleet-{uuid.uuid4().hex[:8]}"
    total = 30_000
    emitter = threading.Thread(
        target=_emit_steadily, args=(settings, topic, producer_id, total, 2000, tmp_path / "spool")
    )
    try:
        emitter.start()
        wait_for(lambda: rows_for_producer(settings, producer_id) > 5000, 90, "the fleet to store events")
        workers[0].kill()  # SIGKILL: no chance to commit or leave the group
        emitter.join(timeout=300)
        wait_for(lambda: rows_for_producer(settings, producer_id) >= total, 180, "every row after the rebalance")
        assert rows_for_producer(settings, producer_id) == total
        client = redis.Redis.from_url(settings.redis_url)
        for k in range(8):  # the hot view is current: each symbol's newest event is the last one sent
            latest = json.loads(client.get(f"guardian:latest:F{k}:DRIFT_MONITOR"))
            assert (latest["producer_id"], latest["payload"]["observed"]) == (producer_id, 1.0 + total - 8 + k)
        assert all(w.alive() for w in workers[1:]), "a surviving worker crashed"
    finally:
        for worker in workers:
            worker.stop()
        emitter.join(timeout=60)
