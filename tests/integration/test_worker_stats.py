"""Worker stats snapshots (`guardian:worker:{host}:{pid}`) from a real worker process."""

from __future__ import annotations

import signal
import socket
import uuid

import redis

from guardian.producers import GuardianProducer
from guardian.settings import Settings
from guardian.sinks.worker_stats import WorkerSnapshot, worker_key
from tests.integration.helpers import WorkerProcess, wait_for


def snapshot(client: redis.Redis, key: str) -> WorkerSnapshot | None:
    fields = client.hgetall(key)
    return WorkerSnapshot.parse(key, fields) if fields else None


def test_a_worker_publishes_its_stats_and_they_expire_when_it_dies(settings: Settings, new_topic, tmp_path):
    topic = new_topic("events", partitions=4)
    client = redis.Redis.from_url(settings.redis_url)
    worker = WorkerProcess(topic, tmp_path, extra_env={"GUARDIAN_WORKER_STATS_TTL_S": "3"}).start()
    try:
        assert worker.process is not None
        key = worker_key(socket.gethostname(), worker.process.pid)  # `guardian worker` runs Faust in-process
        first = wait_for(lambda: snapshot(client, key), 90, "the worker's first snapshot")
        assert 0 < client.pttl(key) <= 3000
        with GuardianProducer(settings, producer_id=f"live-{uuid.uuid4().hex[:8]}", topic=topic,
                              spool_dir=tmp_path / "spool") as producer:  # fmt: skip
            for n in range(40):
                producer.drift(f"LVW{n % 4}", metric="m", expected=1.0, observed=1.0 + n, drift_score=0.1)
            assert producer.flush(30) == 0

        def counted() -> WorkerSnapshot | None:
            s = snapshot(client, key)
            # Lag is known for the partitions the worker has read from (the 4 symbols may share some).
            return s if s and s.events_total - first.events_total >= 40 and s.lag else None

        # Lag is exported every 5 s; the snapshot follows within a second.
        later = wait_for(counted, 60, "40 events and the lag of their partitions in the snapshot")
        assert set(later.lag) <= {0, 1, 2, 3} and all(behind >= 0 for behind in later.lag.values())
        assert later.at_us > first.at_us
        assert later.emit_to_store_count - first.emit_to_store_count >= 40
        assert later.emit_to_store_buckets[float("inf")] == later.emit_to_store_count
        assert set(later.store_down) <= {"redis", "postgres"} and not any(later.store_down.values())
        worker.kill(signal.SIGKILL)  # no goodbye: the TTL is what removes it
        wait_for(lambda: not client.exists(key), 10, "the dead worker's snapshot to expire")
    finally:
        worker.stop()
