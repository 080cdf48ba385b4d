"""The Redis hot view's batch script against a real Redis: idempotent, never moves backwards."""

from __future__ import annotations

import asyncio
import json
import uuid

import redis

from guardian.schemas.events import StoredEvent
from guardian.settings import Settings
from guardian.sinks.redis_hot_view import RedisHotView, minute_key


def drift(symbol: str, sequence: int, at_us: int, producer: str = "p1") -> StoredEvent:
    event = {
        "event_id": f"{producer}-{sequence}", "producer_id": producer, "sequence": sequence, "host": "h",
        "symbol": symbol, "detector": "DRIFT_MONITOR", "event_time": at_us, "severity": "INFO", "schema_version": 1,
        "payload": ("io.guardian.events.Drift", {"metric": "m", "expected": 1.0, "observed": 1.0,
                                                  "drift_score": float(sequence), "window_seconds": 60}),
    }  # fmt: skip
    return StoredEvent(event, partition=0, offset=sequence)


def breaker(symbol: str, sequence: int, at_us: int, to_state: str) -> StoredEvent:
    stored = drift(symbol, sequence, at_us)
    stored.event.update(
        detector="CIRCUIT_BREAKER",
        payload=("io.guardian.events.CircuitBreakerTransition",
                 {"from_state": "CLOSED", "to_state": to_state, "reason": "r", "trip_count": 1, "cooldown_seconds": 5}),
    )  # fmt: skip
    return stored


def test_a_redelivered_or_older_batch_changes_nothing(settings: Settings):
    symbol = f"HV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    now_us = client.time()[0] * 1_000_000
    batch = [drift(symbol, seq, now_us - 1000 + seq) for seq in range(1, 6)]
    batch.append(breaker(symbol, 6, now_us, "OPEN"))

    async def scenario() -> list[int]:
        view = RedisHotView(settings.redis_url, recent_max=100)
        try:
            first = await view.write(batch)
            again = await view.write(batch)  # redelivery of the same batch
            older = await view.write(batch[:2])  # a replay of older events
            return [first, again, older]
        finally:
            await view.close()

    # (events new to the window and counted, keys moved forward) per write: latest and drift for the newest
    # drift, latest and breaker for the breaker
    assert asyncio.run(scenario()) == [(6, 4), (0, 0), (0, 0)]
    latest = json.loads(client.get(f"guardian:latest:{symbol}:DRIFT_MONITOR"))
    assert latest["sequence"] == 5
    assert client.hget(f"guardian:seq:{symbol}:DRIFT_MONITOR", "p1") == b"5"
    assert client.hget(f"guardian:breaker:{symbol}", "state") == b"OPEN"
    assert client.zcard(f"guardian:recent:{symbol}") == 6
    expected: dict[tuple[str, bytes], int] = {}  # the batch may straddle a minute boundary
    for stored in batch:
        key = (minute_key(stored.event["event_time"] // 60_000_000), stored.event["detector"].encode())
        expected[key] = expected.get(key, 0) + 1
    for (minute, detector), count in expected.items():  # other tests may count into the same minute
        assert int(client.hget(f"guardian:minute:{minute}", detector) or 0) >= count
    # The minute counters count only events new to the window: the 0s above are what keeps them exact.


def test_the_recent_window_keeps_the_newest_per_symbol(settings: Settings):
    symbol = f"HV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    now_us = client.time()[0] * 1_000_000

    async def scenario() -> None:
        view = RedisHotView(settings.redis_url, recent_max=10)
        try:
            await view.write([drift(symbol, seq, now_us - 100 + seq) for seq in range(1, 31)])
        finally:
            await view.close()

    asyncio.run(scenario())
    kept = [json.loads(m)["sequence"] for m in client.zrange(f"guardian:recent:{symbol}", 0, -1)]
    assert kept == list(range(21, 31))


def test_a_restarted_producer_is_taken_at_once_and_its_previous_run_is_still_refused(settings: Settings):
    """Sequences are epoch << 32 | n (producers/producer.py): a new run starts above the last one."""
    symbol = f"HV{uuid.uuid4().hex[:8].upper()}"
    client = redis.Redis.from_url(settings.redis_url)
    now_us = client.time()[0] * 1_000_000
    first_run = [drift(symbol, 7 << 32 | n, now_us - 1000 + n) for n in range(1, 1001)]
    restarted = [drift(symbol, 8 << 32 | n, now_us + n) for n in range(1, 3)]

    async def scenario() -> None:
        view = RedisHotView(settings.redis_url, recent_max=100)
        try:
            await view.write(first_run)
            await view.write(restarted)  # its second event: far below the first run's 1,000th as a count
            await view.write(first_run[-5:])  # the old run's tail redelivered, after the restart
        finally:
            await view.close()

    asyncio.run(scenario())
    latest = json.loads(client.get(f"guardian:latest:{symbol}:DRIFT_MONITOR"))
    assert latest["sequence"] == 8 << 32 | 2
    assert int(client.hget(f"guardian:seq:{symbol}:DRIFT_MONITOR", "p1")) == 8 << 32 | 2  # exact: below 2^53
