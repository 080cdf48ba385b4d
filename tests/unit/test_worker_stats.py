"""Worker stats snapshots: the hash round-trip, the fleet sum, rates and p99 from two sums."""

from __future__ import annotations

import math

import pytest

from guardian.sinks.live_feed import alert_fields, parse_entry
from guardian.sinks.worker_stats import (
    WorkerSnapshot,
    bucket_quantile,
    fleet_rates,
    fleet_totals,
    worker_key,
)

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, math.inf)


def buckets(*per_bucket: float) -> dict[float, float]:
    """Cumulative bucket counts from the number of observations in each bucket."""
    out, running = {}, 0.0
    for bound, n in zip(BOUNDS, per_bucket, strict=True):
        running += n
        out[bound] = running
    return out


def snap(worker: str, events: float, dlq: float = 0, hist: dict | None = None, **kw) -> WorkerSnapshot:
    return WorkerSnapshot(worker=worker, at_us=kw.pop("at_us", 1), events_total=events, dlq_total=dlq,
                          emit_to_store_buckets=hist or buckets(0, 0, 0, 0, 0, 0), **kw)  # fmt: skip


def test_a_snapshot_survives_its_hash():
    s = snap("h:1", 12.0, 2.0, buckets(1, 2, 3, 0, 0, 1), store_down={"redis": 1, "postgres": 0},
             lag={0: 5, 11: 0}, commit_age_s=1.5, emit_to_store_count=7.0, emit_to_store_sum=0.4)  # fmt: skip
    fields = s.fields()
    assert fields["emit_to_store_bucket:+Inf"] == "7.0"
    assert fields["lag:11"] == "0" and fields["store_down:redis"] == "1"
    as_redis = {k.encode(): v.encode() for k, v in fields.items()}  # HGETALL answers bytes
    assert WorkerSnapshot.parse(worker_key("h", 1).encode(), as_redis) == s


def test_the_fleet_sum_adds_counters_and_buckets_and_takes_the_worst_lag_and_commit_age():
    a = snap("a:1", 100, 1, buckets(10, 0, 0, 0, 0, 0), store_down={"redis": 1}, lag={0: 3, 1: 4},
             commit_age_s=2.0, at_us=5)  # fmt: skip
    b = snap("b:2", 50, 2, buckets(0, 5, 0, 0, 0, 1), store_down={"redis": 0, "postgres": 0}, lag={1: 9, 2: 1},
             commit_age_s=0.5, at_us=7)  # fmt: skip
    total = fleet_totals([a, b])
    assert (total.workers, total.events_total, total.dlq_total, total.at_us) == (2, 150, 3, 7)
    assert total.emit_to_store_buckets == {0.005: 10, 0.01: 15, 0.025: 15, 0.05: 15, 0.1: 15, math.inf: 16}
    assert total.store_down == {"redis": 1, "postgres": 0}
    assert total.lag == {0: 3, 1: 9, 2: 1} and total.total_lag == 13  # a partition both report: the higher
    assert total.commit_age_s == 2.0


def test_no_worker_sums_to_zeros():
    total = fleet_totals([])
    assert (total.workers, total.events_total, total.at_us, total.lag) == (0, 0, 0, {})
    assert fleet_rates(total, total, 1.0).emit_to_store_p99_s is None


def test_rates_and_p99_come_from_the_deltas():
    before = fleet_totals([snap("a:1", 1000, 10, buckets(500, 0, 0, 0, 0, 0))])  # old, fast observations
    after = fleet_totals([snap("a:1", 3000, 14, buckets(500, 0, 1000, 0, 1000, 0))])
    rates = fleet_rates(before, after, 10.0)
    assert (rates.events_per_s, rates.dlq_per_s, rates.workers_compared) == (200, 0.4, 1)
    # 2,000 new observations: the 1,980th lies in (0.05, 0.1], 980 of 1,000 into it
    assert rates.emit_to_store_p99_s == pytest.approx(0.05 + 0.05 * 980 / 1000)


def test_a_worker_that_joined_or_left_between_two_sums_counts_for_nothing():
    before = fleet_totals([snap("a:1", 100), snap("gone:3", 10_000)])
    after = fleet_totals([snap("a:1", 150), snap("new:4", 1_000_000, hist=buckets(0, 0, 0, 0, 0, 9))])
    rates = fleet_rates(before, after, 1.0)
    assert (rates.events_per_s, rates.workers_compared) == (50, 1)
    assert rates.emit_to_store_p99_s is None  # the newcomer's slow observations are not in the interval


def test_a_counter_that_went_down_is_no_negative_rate():
    rates = fleet_rates(fleet_totals([snap("a:1", 100)]), fleet_totals([snap("a:1", 90)]), 1.0)
    assert rates.events_per_s == 0


def test_the_quantile_follows_prometheus():
    assert bucket_quantile(0.99, buckets(0, 0, 0, 0, 0, 0)) is None
    assert bucket_quantile(0.5, buckets(10, 0, 0, 0, 0, 0)) == pytest.approx(0.0025)  # from 0 to the first bound
    assert bucket_quantile(0.99, buckets(1, 0, 0, 0, 0, 99)) == 0.1  # in +Inf: the highest finite bound
    with pytest.raises(ValueError):
        fleet_rates(fleet_totals([]), fleet_totals([]), 0)


def test_alert_entries_round_trip_and_say_when_and_whether_silenced():
    alert = {"fingerprint": "fp", "rule": "breaker_open", "severity": "P0", "status": "RESOLVED",
             "labels": {"symbol": "AAPL"}, "summary": "x" * 5000, "starts_at": 10, "ends_at": 20}  # fmt: skip
    fields = alert_fields(alert, silenced=True)
    assert fields["at"] == 20 and fields["silenced"] == "true" and len(fields["summary"]) == 2000
    entry = parse_entry({k.encode(): str(v).encode() for k, v in fields.items()})
    assert entry == {"type": "alert", "fingerprint": "fp", "rule": "breaker_open", "severity": "P0",
                     "status": "RESOLVED", "symbol": "AAPL", "silenced": True, "summary": "x" * 2000,
                     "at": 20}  # fmt: skip
    firing = alert_fields({**alert, "status": "FIRING", "ends_at": None, "labels": {}}, silenced=False)
    assert (firing["at"], firing["symbol"], firing["silenced"]) == (10, "", "false")
    assert parse_entry({b"type": b"from-a-newer-writer"}) is None
