"""The dashboard's numbers, once a second for every client: ingest and dead-letter rates and the
emit→stored p99 from the workers' snapshots (sinks/worker_stats.py), lag per partition from Kafka
itself (right even when every worker is down), and whether each store answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from guardian.api.live import LiveHub, Message
from guardian.api.routes.status import KafkaLag
from guardian.logs import get_logger
from guardian.sinks.worker_stats import WORKER_KEY_PATTERN, FleetTotals, WorkerSnapshot, fleet_rates, fleet_totals

log = get_logger(__name__)
INTERVAL_S = 1.0
RATE_WINDOW_S = 5.0  # rates over the last few seconds: steady, yet a stop shows within seconds
P99_WINDOW_S = 30.0  # a p99 needs a few hundred samples to mean anything
PING_TIMEOUT_S = 1.0


async def read_totals(client) -> FleetTotals:
    keys = [key async for key in client.scan_iter(match=WORKER_KEY_PATTERN, count=1000)]
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = await pipe.execute()
    return fleet_totals(WorkerSnapshot.parse(k, h) for k, h in zip(keys, hashes, strict=True) if h)


class Sampler:
    def __init__(self, hub: LiveHub, client, pool, kafka_lag: KafkaLag) -> None:
        self.hub, self.client, self.pool, self.kafka_lag = hub, client, pool, kafka_lag
        self.history: deque[tuple[float, FleetTotals]] = deque()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-sampler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                self.hub.publish(Message("metrics", await self.sample()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dashboard metrics not sampled", error=repr(exc))
            await asyncio.sleep(max(0.0, INTERVAL_S - (time.monotonic() - began)))

    def _rate_since(self, now: float, totals: FleetTotals, window_s: float):
        """Rates between now and the oldest kept sample at most `window_s` old (None until there is one)."""
        old = next(((t, v) for t, v in self.history if now - t <= window_s + 0.5 and now - t > 0.5), None)
        return fleet_rates(old[1], totals, now - old[0]) if old else None

    async def sample(self) -> dict:
        redis_up, totals = True, None
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                totals = await read_totals(self.client)
        except Exception:
            redis_up = False
        postgres_up = True
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self.pool.fetchval("SELECT 1")
        except Exception:
            postgres_up = False
        lag, _ = await self.kafka_lag.get()
        now = time.monotonic()
        rates = p99 = None
        if totals is not None:
            rates = self._rate_since(now, totals, RATE_WINDOW_S)
            p99 = self._rate_since(now, totals, P99_WINDOW_S)
            self.history.append((now, totals))
            while self.history and now - self.history[0][0] > P99_WINDOW_S + 2:
                self.history.popleft()
        behind = {str(p): end - (done or 0) for p, (done, end) in sorted((lag or {}).items())}
        return {
            "at": time.time(),
            "ingest_per_s": rates.events_per_s if rates else None,
            "dlq_per_s": rates.dlq_per_s if rates else None,
            "p99_ms": p99.emit_to_store_p99_s * 1000 if p99 and p99.emit_to_store_p99_s is not None else None,
            "workers": totals.workers if totals else None,
            "lag": behind,
            "total_lag": sum(behind.values()) if lag is not None else None,
            "stores": {"kafka": lag is not None, "postgresql": postgres_up, "redis": redis_up},
        }
