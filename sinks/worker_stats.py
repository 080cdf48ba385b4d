"""Worker stats snapshots in Redis, and the pure arithmetic a reader (the API's sampler) does with them.

The workers' Prometheus metrics live in each worker process (its /metrics page). So that a reader
which does not scrape them (the dashboard) can see the fleet, every worker writes, about once a
second, a hash `guardian:worker:{host}:{pid}` with a TTL of GUARDIAN_WORKER_STATS_TTL_S: a worker
that dies without a word drops out within that.

Hash fields (all strings, counters cumulative since the worker started):

| field | content |
| --- | --- |
| `at` | when the snapshot was taken, µs since the epoch (the worker's clock) |
| `events_total` | events processed |
| `dlq_total` | records sent to the dead-letter topic |
| `store_down:{sink}` | 1 while that store refuses writes and the worker retries, else 0 |
| `emit_to_store_bucket:{le}` | cumulative count of the emit->stored histogram at bound `le` s (`+Inf` last) |
| `emit_to_store_count`, `emit_to_store_sum` | that histogram's count and sum (s) |
| `lag:{partition}` | records behind the high watermark, for each partition the worker owns |
| `commit_age_s` | seconds since its last offset commit while events wait (0 while nothing waits) |

`fleet_totals()` sums the snapshots of all workers; `fleet_rates()` turns two totals taken Δt apart
into rates and the p99, from counter deltas, so a reader never needs a worker's history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

WORKER_KEY_PREFIX = "guardian:worker:"
WORKER_KEY_PATTERN = WORKER_KEY_PREFIX + "*"  # for SCAN: one key per live worker
BUCKET = "emit_to_store_bucket:"
STORE_DOWN = "store_down:"
LAG = "lag:"


def worker_key(host: str, pid: int) -> str:
    return f"{WORKER_KEY_PREFIX}{host}:{pid}"


def _le_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass(frozen=True)
class WorkerSnapshot:
    worker: str  # "{host}:{pid}", the key without its prefix
    at_us: int
    events_total: float
    dlq_total: float
    store_down: Mapping[str, int] = field(default_factory=dict)  # sink -> 1 (down) or 0
    emit_to_store_buckets: Mapping[float, float] = field(default_factory=dict)  # le (s, inf last) -> cumulative
    emit_to_store_count: float = 0.0
    emit_to_store_sum: float = 0.0
    lag: Mapping[int, int] = field(default_factory=dict)  # partition -> records behind
    commit_age_s: float = 0.0

    def fields(self) -> dict[str, str]:
        """The hash the worker writes."""
        out = {
            "at": str(self.at_us),
            "events_total": repr(float(self.events_total)),
            "dlq_total": repr(float(self.dlq_total)),
            "emit_to_store_count": repr(float(self.emit_to_store_count)),
            "emit_to_store_sum": repr(float(self.emit_to_store_sum)),
            "commit_age_s": repr(float(self.commit_age_s)),
        }
        out.update({STORE_DOWN + sink: str(down) for sink, down in self.store_down.items()})
        out.update({BUCKET + _le_text(le): repr(float(n)) for le, n in self.emit_to_store_buckets.items()})
        out.update({LAG + str(partition): str(lag) for partition, lag in self.lag.items()})
        return out

    @classmethod
    def parse(cls, key: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> WorkerSnapshot:
        """A snapshot from its key and HGETALL answer."""
        text = {_text(k): _text(v) for k, v in fields.items()}
        store_down, buckets, lag = {}, {}, {}
        for name, value in text.items():
            if name.startswith(STORE_DOWN):
                store_down[name[len(STORE_DOWN) :]] = int(value)
            elif name.startswith(BUCKET):
                buckets[float(name[len(BUCKET) :].replace("+Inf", "inf"))] = float(value)
            elif name.startswith(LAG):
                lag[int(name[len(LAG) :])] = int(value)
        return cls(
            worker=_text(key).removeprefix(WORKER_KEY_PREFIX),
            at_us=int(text.get("at", 0)),
            events_total=float(text.get("events_total", 0)),
            dlq_total=float(text.get("dlq_total", 0)),
            store_down=store_down,
            emit_to_store_buckets=dict(sorted(buckets.items())),
            emit_to_store_count=float(text.get("emit_to_store_count", 0)),
            emit_to_store_sum=float(text.get("emit_to_store_sum", 0)),
            lag=lag,
            commit_age_s=float(text.get("commit_age_s", 0)),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class FleetTotals:
    at_us: int  # the newest snapshot's time (0: no worker)
    workers: int
    events_total: float
    dlq_total: float
    store_down: Mapping[str, int]  # sink -> how many workers see it down (0: none)
    emit_to_store_buckets: Mapping[float, float]  # le -> cumulative count, summed over workers
    lag: Mapping[int, int]  # partition -> records behind (the highest any worker reports: during a
    # rebalance two workers may briefly both report one)
    commit_age_s: float  # the oldest commit among workers
    # Each worker's snapshot, so fleet_rates() takes deltas worker by worker: a worker that joined
    # or left between two totals must not show up as a burst or a negative rate.
    by_worker: Mapping[str, WorkerSnapshot] = field(default_factory=dict, repr=False)

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


def fleet_totals(snapshots: Iterable[WorkerSnapshot]) -> FleetTotals:
    """The sum of every worker's snapshot."""
    by_worker = {s.worker: s for s in snapshots}
    store_down: dict[str, int] = {}
    buckets: dict[float, float] = {}
    lag: dict[int, int] = {}
    for s in by_worker.values():
        for sink, down in s.store_down.items():
            store_down[sink] = store_down.get(sink, 0) + down
        for le, n in s.emit_to_store_buckets.items():
            buckets[le] = buckets.get(le, 0.0) + n
        for partition, behind in s.lag.items():
            lag[partition] = max(lag.get(partition, 0), behind)
    return FleetTotals(
        at_us=max((s.at_us for s in by_worker.values()), default=0),
        workers=len(by_worker),
        events_total=sum(s.events_total for s in by_worker.values()),
        dlq_total=sum(s.dlq_total for s in by_worker.values()),
        store_down=store_down,
        emit_to_store_buckets=dict(sorted(buckets.items())),
        lag=dict(sorted(lag.items())),
        commit_age_s=max((s.commit_age_s for s in by_worker.values()), default=0.0),
        by_worker=by_worker,
    )


@dataclass(frozen=True)
class FleetRates:
    seconds: float
    events_per_s: float
    dlq_per_s: float
    emit_to_store_p99_s: float | None  # None: nothing was stored in the interval
    workers_compared: int  # workers present in both totals (only they count)


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile() over cumulative bucket counts (le -> count, `inf` included):
    linear within the bucket the rank falls in; the highest finite bound when it falls in +Inf."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def fleet_rates(before: FleetTotals, after: FleetTotals, seconds: float) -> FleetRates:
    """Rates and the emit->stored p99 over the `seconds` between two totals. Counted over the
    workers present in both; a restarted worker has a new pid, so it counts from its second snapshot on."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    events = dlq = 0.0
    buckets: dict[float, float] = {}
    common = before.by_worker.keys() & after.by_worker.keys()
    for worker in common:
        old, new = before.by_worker[worker], after.by_worker[worker]
        # A counter never goes down within one process; max() keeps a torn read from making it negative.
        events += max(0.0, new.events_total - old.events_total)
        dlq += max(0.0, new.dlq_total - old.dlq_total)
        for le, n in new.emit_to_store_buckets.items():
            buckets[le] = buckets.get(le, 0.0) + max(0.0, n - old.emit_to_store_buckets.get(le, 0.0))
    return FleetRates(
        seconds=seconds,
        events_per_s=events / seconds,
        dlq_per_s=dlq / seconds,
        emit_to_store_p99_s=bucket_quantile(0.99, buckets),
        workers_compared=len(common),
    )
