"""This worker's stats snapshot (sinks/worker_stats.py has the format), read from its Prometheus objects.

The snapshot is built from the same prometheus_client objects /metrics serves, so the dashboard
and Prometheus never disagree about what a worker counted.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Collection

import redis.asyncio as redis
from prometheus_client.metrics import MetricWrapperBase

from guardian.sinks.worker_stats import WorkerSnapshot, worker_key
from guardian.stream_processors import metrics


def _samples(metric: MetricWrapperBase, suffix: str = "") -> list[tuple[dict[str, str], float]]:
    # collect() is prometheus_client's public way to read a metric's values, labels and all; a counter's
    # family is named without `_total`, its samples with it.
    return [
        (sample.labels, sample.value)
        for family in metric.collect()
        for sample in family.samples
        if sample.name == family.name + suffix
    ]


def collect(worker: str, assigned: Collection[int] | None) -> WorkerSnapshot:
    """The snapshot of now. `assigned`: the partitions this worker owns (None: unknown), so that the
    lag gauges of partitions it gave away in a rebalance, which stay at their last value, are left out."""
    lag = {int(labels["partition"]): int(value) for labels, value in _samples(metrics.CONSUMER_LAG)}
    if assigned is not None:
        lag = {p: v for p, v in lag.items() if p in assigned}
    buckets = {float(labels["le"].replace("+Inf", "inf")): value
               for labels, value in _samples(metrics.EVENT_LAG, "_bucket")}  # fmt: skip
    return WorkerSnapshot(
        worker=worker,
        at_us=time.time_ns() // 1000,
        events_total=sum(value for _, value in _samples(metrics.EVENTS, "_total")),
        dlq_total=sum(value for _, value in _samples(metrics.DLQ, "_total")),
        store_down={labels["sink"]: int(value) for labels, value in _samples(metrics.STORE_DOWN)},
        emit_to_store_buckets=dict(sorted(buckets.items())),
        emit_to_store_count=sum(value for _, value in _samples(metrics.EVENT_LAG, "_count")),
        emit_to_store_sum=sum(value for _, value in _samples(metrics.EVENT_LAG, "_sum")),
        lag=dict(sorted(lag.items())),
        commit_age_s=sum(value for _, value in _samples(metrics.COMMIT_AGE)),
    )


class StatsPublisher:
    """Writes this worker's snapshot to `guardian:worker:{host}:{pid}` with a TTL."""

    def __init__(self, client: redis.Redis, ttl_s: float) -> None:
        self.client = client
        self.ttl_ms = max(1, int(ttl_s * 1000))
        host, pid = socket.gethostname(), os.getpid()
        self.key = worker_key(host, pid)
        self.worker = f"{host}:{pid}"

    async def publish(self, assigned: Collection[int] | None) -> WorkerSnapshot:
        snapshot = collect(self.worker, assigned)
        # One MULTI: readers never see the hash half-written, nor missing between DEL and HSET. The DEL
        # drops fields of partitions this worker no longer owns.
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.key)
        pipe.hset(self.key, mapping=snapshot.fields())
        pipe.pexpire(self.key, self.ttl_ms)
        await pipe.execute()
        return snapshot
