"""Pipeline benchmark: producer -> Kafka -> one Faust worker -> PostgreSQL + Redis, on this machine.

1. Throughput: N events emitted as fast as the producer allows; events/s from the first emit to
   the last row stored (both stores are written before a batch is acknowledged).
2. Latency at a fixed rate (default 5,000 events/s): emit -> visible in Redis, p50/p99, sampled on
   every 25th event by a poller reading the hot view's sequence guard
   `guardian:seq:{symbol}:{detector}` (written in the same script as `latest`); and emit of a
   circuit-breaker OPEN -> its P0 alert on the alerts topic, p50/p99 (one OPEN per 100 events).
3. Baselines, same run, same topic: a plain confluent-kafka consumer loop that only decodes
   (the ceiling), and a Faust agent that only takes batches (Faust's own per-message cost).
lost and duplicated are counted in PostgreSQL against what was emitted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import click
import redis
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.machine import describe_machine
from guardian.kafka_config import client_config
from guardian.producers import GuardianProducer
from guardian.producers.producer import EPOCH_SHIFT
from guardian.schemas.codec import EventCodec, load_alert_schema
from guardian.settings import REPO_ROOT, Settings
from guardian.stack.process import free_port, wait_until

GUARDIAN = str(Path(sys.executable).with_name("guardian"))
SYMBOL_PREFIX = "BENCH-"  # every bench symbol, so the run can remove what it put in the stores
BREAKER_EVERY = 100  # one breaker OPEN (and one CLOSED) per 100 events of the latency run
POLL_INTERVAL_S = 0.002  # the Redis poller's period: the error bound of emit->Redis samples (its CPU competes)
# The latency run emits on a 1 ms tick (5 events per tick at 5k/s) rather than sleeping after every
# event: with 5,000 sleeps a second the bench process took 0.29-0.30 of a core, on the tick 0.21,
# CPU the pipeline under test competes for on a 2-core host.
PACING_TICK_S = 0.001
WARMUP_EVENTS = 200
# The latency run starts with this long at the rate, unmeasured: the pipeline goes from the idle
# settling step to 5k/s, and the first second of a run was its slowest even on a warm stack
# (1-s window p99 of 36-66 ms against 21-35 ms in the seconds after). After 3 s of lead-in, a new
# stack's first run still had its slowest 5 s first (p99 51-69 ms, then 22-28 ms).
LEAD_IN_S = 10.0


def rows_of(dsn: str, producer_id: str, since: datetime, table: str = "guardian_events") -> tuple[int, int]:
    """(rows, unique events) of `producer_id` with event_time >= `since` in `table` (a peer's may differ).
    The time bound lets the primary key's index find the run's rows: without it every poll scanned the
    day's partition (132 ms with 1M rows), competing with the worker for the CPU that was being measured."""

    async def run() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, count(DISTINCT event_id) AS u FROM {table}"
                " WHERE event_time >= $2 AND producer_id = $1",
                producer_id,
                since,
            )
            return row["n"], row["u"]
        finally:
            await conn.close()

    return asyncio.run(run())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2) if ordered else float("nan")


def _windowed_p99(times: list[float], values: list[float], began: float, window_s: float) -> list[float]:
    windows: dict[int, list[float]] = defaultdict(list)
    for at, value in zip(times, values, strict=True):
        windows[int((at - began) // window_s)].append(value)
    return [_percentile(windows[w], 0.99) for w in sorted(windows)]


def _start_worker(
    settings: Settings, topic: str, alerts_topic: str, group: str, workdir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GUARDIAN_EVENTS_TOPIC": topic,
        "GUARDIAN_ALERTS_TOPIC": alerts_topic,
        "GUARDIAN_WORKER_GROUP": group,
        "GUARDIAN_WORKER_WEB_PORT": str(free_port()),
        "GUARDIAN_WORKER_DATA_DIR": str(workdir / "worker"),
        "GUARDIAN_LOG_LEVEL": "WARNING",
    }
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([GUARDIAN, "worker"], stdout=log, stderr=subprocess.STDOUT, env=env)


def _throughput(settings: Settings, topic: str, events: int, workdir: Path, worker: subprocess.Popen[bytes]) -> dict:
    # Sustained throughput, not the worker's start-up: the clock starts once one event has gone
    # all the way through (the worker has joined the group and both stores answer).
    ready_id = f"bench-ready-{uuid.uuid4().hex[:6]}"
    with GuardianProducer(settings, producer_id=ready_id, topic=topic, spool_dir=workdir / "spool-ready") as p:
        p.drift(f"{SYMBOL_PREFIX}READY", metric="m", expected=1.0, observed=1.0, drift_score=0.0)
        p.flush(30)
    _wait_until_stored(settings, ready_id, 1, worker, workdir)
    producer_id = f"bench-tp-{uuid.uuid4().hex[:6]}"
    began = time.perf_counter()
    with GuardianProducer(settings, producer_id=producer_id, topic=topic, spool_dir=workdir / "spool-tp") as p:
        for i in range(events):
            p.drift(f"{SYMBOL_PREFIX}T{i % 20:02d}", metric="m", expected=1.0, observed=1.5, drift_score=float(i))
        p.flush(120)
    emitted_s = time.perf_counter() - began
    stored, unique = _wait_until_stored(settings, producer_id, events, worker, workdir)
    elapsed = time.perf_counter() - began
    click.echo(f"  throughput: {events} events stored in {elapsed:.1f} s (emitting took {emitted_s:.1f} s)")
    return {
        "producer_ids": [ready_id, producer_id],
        "events": events,
        "throughput_events_per_s": round(unique / elapsed),
        "lost": events - unique,
        "duplicated": stored - unique,
    }


def _wait_until_stored(
    settings: Settings, producer_id: str, events: int, worker: subprocess.Popen[bytes], workdir: Path
) -> tuple[int, int]:
    """(rows, unique events) of `producer_id` in PostgreSQL once all `events` are there (or after 600 s)."""
    since = datetime.now(UTC) - timedelta(minutes=10)  # its events were all emitted after this
    deadline = time.monotonic() + 600
    stored, unique = rows_of(settings.postgres_dsn, producer_id, since)
    while unique < events and time.monotonic() < deadline:
        if worker.poll() is not None:
            raise click.ClickException(f"the worker exited ({worker.returncode}); see {workdir / 'worker.log'}")
        time.sleep(0.1)
        stored, unique = rows_of(settings.postgres_dsn, producer_id, since)
    return stored, unique


def _ceiling(settings: Settings, topic: str, events: int) -> float:
    codec = EventCodec()
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"bench-ceiling-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    began = None
    deadline = time.monotonic() + 300
    while seen < events and time.monotonic() < deadline:
        for message in consumer.consume(5000, timeout=0.5):
            if message.error() is None:
                began = began or time.perf_counter()
                codec.decode(message.value())
                seen += 1
    consumer.close()
    return round(seen / (time.perf_counter() - (began or time.perf_counter())))


class _AlertWatcher:
    """Reads the alerts topic in a thread and notes when each symbol's FIRING alert arrived."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = Consumer(
            client_config(
                settings,
                {
                    "group.id": f"bench-alerts-{uuid.uuid4().hex[:6]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 5,
                },
            )
        )
        self._consumer.subscribe([topic])
        self._codec = EventCodec(load_alert_schema())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.05)
            if message is not None and message.error() is None:
                alert = self._codec.decode(message.value())
                if alert["status"] == "FIRING" and alert["symbol"]:
                    self.arrived.setdefault(alert["symbol"], time.perf_counter())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()


def _latency(
    settings: Settings, topic: str, alerts_topic: str | None, rate: int, seconds: float, workdir: Path
) -> dict:
    """emit -> Redis (and, with `alerts_topic`, emit of a breaker OPEN -> its alert) at `rate` events/s."""
    producer_id = f"bench-lat-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(settings.redis_url)
    pending: dict[str, deque[tuple[int, float]]] = defaultdict(deque)  # key -> [(sequence, emitted at)]
    lock = threading.Lock()
    latencies: list[float] = []
    emitted_at: list[float] = []  # when each sample was emitted, beside its latency
    done = threading.Event()

    def poll() -> None:
        # Reads the hot view's sequence guard (one small integer per key) rather than the latest
        # event's JSON: the same "visible in Redis" moment, at a fraction of the poller's CPU.
        while True:
            with lock:
                keys = [key for key, samples in pending.items() if samples]
            if not keys and done.is_set():
                break
            if keys:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hget(key, producer_id)
                values = pipe.execute()
                now = time.perf_counter()
                for key, value in zip(keys, values, strict=True):
                    if value is None:
                        continue
                    applied = int(value)
                    with lock:
                        samples = pending[key]
                        while samples and applied >= samples[0][0]:
                            sent = samples.popleft()[1]
                            latencies.append((now - sent) * 1000)
                            emitted_at.append(sent)
            time.sleep(POLL_INTERVAL_S)
            if done.is_set() and time.perf_counter() - finished_at > 30:
                break

    finished_at = float("inf")
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    total = int(rate * seconds)
    with GuardianProducer(settings, producer_id=producer_id, topic=topic, spool_dir=workdir / "spool-lat") as p:
        # Warm-up: a new producer spends its first ~200 ms connecting and getting an idempotent
        # producer id; that start-up cost is not the steady-state latency this run measures.
        for _ in range(WARMUP_EVENTS):
            p.drift(f"{SYMBOL_PREFIX}WARMUP", metric="m", expected=1.0, observed=1.0, drift_score=0.0)
        p.flush(30)
        watcher = _AlertWatcher(settings, alerts_topic) if alerts_topic else None
        opened: dict[str, float] = {}  # symbol -> when its breaker OPEN was emitted
        lead_in = int(rate * LEAD_IN_S)

        def emit_at_rate(count: int, prefix: str, measure: bool) -> float:
            """`count` events at `rate`, a breaker OPEN and CLOSED per BREAKER_EVERY; returns the start."""
            began = time.perf_counter()
            for i in range(count):
                symbol = f"{prefix}L{i % 40:02d}"
                if i % BREAKER_EVERY == 0:  # part of the rate: a breaker opens on a symbol of its own...
                    breaker_symbol = f"{prefix}BRK{i // BREAKER_EVERY:05d}"
                    p.circuit_breaker(breaker_symbol, "CLOSED", "OPEN", reason="bench")
                    if measure:
                        opened[breaker_symbol] = time.perf_counter()
                elif i % BREAKER_EVERY == BREAKER_EVERY // 2:  # ...and closes again, so no alert stays firing
                    p.circuit_breaker(f"{prefix}BRK{i // BREAKER_EVERY:05d}", "OPEN", "CLOSED", reason="bench")
                else:
                    p.drift(symbol, metric="m", expected=1.0, observed=1.0, drift_score=0.0)
                # Sampled: drift events only (i % 100 is never 0 or 50 here), so the sample's sequence is
                # the event's own, not the next drift of that symbol.
                if measure and i % 25 == 5:
                    with lock:
                        sequence = p.epoch << EPOCH_SHIFT | WARMUP_EVENTS + lead_in + i + 1
                        pending[f"guardian:seq:{symbol}:DRIFT_MONITOR"].append((sequence, time.perf_counter()))
                delay = began + (i + 1) / rate - time.perf_counter()
                if delay > PACING_TICK_S:
                    time.sleep(delay)
            return began

        emit_at_rate(lead_in, f"{SYMBOL_PREFIX}LEADIN-", measure=False)
        cpu_began = sum(os.times()[:2])
        began = emit_at_rate(total, SYMBOL_PREFIX, measure=True)
        bench_cpu = (sum(os.times()[:2]) - cpu_began) / (time.perf_counter() - began)
        unflushed = p.flush(60)  # not 0: the last events (and their alerts) never reached Kafka
        spooled = p.stats()["spooled"]
    finished_at = time.perf_counter()
    done.set()
    poller.join(timeout=60)
    alerts = {}
    if watcher is not None:
        deadline = time.monotonic() + 30
        # Each measured OPEN's own alert: a count would include the lead-in's alerts (seen by the same
        # watcher) and end the wait before the last ones arrived, counting them as missing.
        while any(symbol not in watcher.arrived for symbol in opened) and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher.close()
        alert_ms = [(watcher.arrived[s] - t) * 1000 for s, t in opened.items() if s in watcher.arrived]
        alerts = {
            "emit_to_alert_p50_ms": _percentile(alert_ms, 0.50),
            "emit_to_alert_p99_ms": _percentile(alert_ms, 0.99),
            "emit_to_alert_samples": len(alert_ms),
            "alerts_missing": len(opened) - len(alert_ms),
            "alerts_missing_symbols": sorted(s for s in opened if s not in watcher.arrived)[:20],
        }
    return {
        "producer_id": producer_id,
        **alerts,
        "latency_run_unflushed": unflushed,
        "latency_run_spooled": spooled,
        "rate_events_per_s": rate,
        "emit_to_redis_p50_ms": _percentile(latencies, 0.50),
        "emit_to_redis_p99_ms": _percentile(latencies, 0.99),
        "emit_to_redis_samples": len(latencies),
        # Where in the run the tail falls: p99 of each 5 s window of emits.
        "emit_to_redis_p99_ms_per_5s": _windowed_p99(emitted_at, latencies, began, 5.0),
        # The bench process itself (emitter, Redis poller, alerts reader) during the run, in cores.
        "latency_run_bench_cpu_cores": round(bench_cpu, 2),
    }


def _settle_stores(settings: Settings) -> str:
    """Do now the maintenance that the bench's own writes make due, so it does not land in a measured
    window: VACUUM ANALYZE (autovacuum), and an AOF rewrite once Redis's append-only file has grown
    past twice its base (Redis rewrites at +300%). On 2 cores either takes the CPU the pipeline
    needs: a VACUUM started on purpose 7 s into a 5k/s run held the hot view back up to 255 ms
    (p99 190 ms), and a run with an AOF rewrite in its latency window had p99 86 ms."""

    async def vacuum() -> None:
        conn = await asyncpg.connect(settings.postgres_admin_dsn)
        try:
            await conn.execute("VACUUM (ANALYZE) guardian_events")
        finally:
            await conn.close()

    began = time.perf_counter()
    asyncio.run(vacuum())
    done = [f"VACUUM ANALYZE {time.perf_counter() - began:.1f} s"]
    client = redis.Redis.from_url(settings.redis_url)
    aof = client.info("persistence")
    if aof.get("aof_enabled") and aof["aof_current_size"] > 2 * max(aof["aof_base_size"], 1):
        began = time.perf_counter()
        client.bgrewriteaof()
        rewritten = wait_until(
            lambda: (
                not (info := client.info("persistence"))["aof_rewrite_in_progress"]
                and not info["aof_rewrite_scheduled"]
            ),
            timeout=120,
        )
        done.append(f"AOF rewrite {time.perf_counter() - began:.1f} s" + ("" if rewritten else " (still running)"))
    return ", ".join(done)


def _remove_bench_data(settings: Settings, producer_ids: list[str]) -> tuple[int, int]:
    """The bench's rows and hot-view keys, so runs stay comparable and operators never see them.
    (Per-minute counters keep the bench's counts; they expire after 25 h.)"""

    async def delete_rows() -> int:
        conn = await asyncpg.connect(settings.postgres_admin_dsn)
        try:
            status = await conn.execute("DELETE FROM guardian_events WHERE producer_id = ANY($1)", producer_ids)
            return int(status.split()[-1])
        finally:
            await conn.close()

    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=f"guardian:*:{SYMBOL_PREFIX}*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    return asyncio.run(delete_rows()), len(keys)


def _faust_null_agent(topic: str, events: int, workdir: Path) -> int | None:
    result_file = workdir / "faust-null.txt"
    with open(workdir / "faust-null.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.faust_null_agent", topic, str(events), str(result_file)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )  # fmt: skip
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
    return int(result_file.read_text()) if result_file.exists() else None


def run_pipeline_bench(settings: Settings, events: int, rate: int = 5000, seconds: float = 15.0) -> dict:
    topic = f"bench.pipeline.{uuid.uuid4().hex[:8]}"
    alerts_topic = f"bench.alerts.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(settings))
    for name in (topic, alerts_topic):
        admin.create_topics([NewTopic(name, settings.events_partitions, 1)])[name].result(timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        group = f"bench-{uuid.uuid4().hex[:8]}"
        worker = _start_worker(settings, topic, alerts_topic, group, workdir)
        try:
            click.echo("pipeline benchmark: one worker, local stack")
            # Before the burst too: rows written and deleted before this run (tests, the demo, an
            # earlier run) would otherwise have autovacuum land in the measured window.
            click.echo(f"  settling before the burst: {_settle_stores(settings)}")
            throughput = _throughput(settings, topic, events, workdir, worker)
            click.echo(f"  settling after the burst: {_settle_stores(settings)}")
            click.echo(
                f"  latency: {rate} events/s for {LEAD_IN_S:.0f} s unmeasured, then {seconds:.0f} s measured;"
                f" 1 breaker OPEN per {BREAKER_EVERY} events"
            )
            latency = _latency(settings, topic, alerts_topic, rate, seconds, workdir)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        click.echo("  baselines: plain confluent-kafka decode loop, Faust null agent")
        ceiling = _ceiling(settings, topic, events)
        faust_null = _faust_null_agent(topic, events, workdir)
    state_topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{group}-state-")]
    admin.delete_topics([topic, alerts_topic, *state_topics])
    rows, keys = _remove_bench_data(settings, [*throughput.pop("producer_ids"), latency.pop("producer_id")])
    click.echo(f"  removed the bench's data: {rows} rows, {keys} Redis keys")
    # Now, not when autovacuum gets to the dead rows: that could be in the next run's window.
    click.echo(f"  settling after the cleanup: {_settle_stores(settings)}")
    result = {
        "machine": describe_machine(),
        **throughput,
        "ceiling_plain_consumer_events_per_s": ceiling,
        "faust_null_agent_events_per_s": faust_null,
        **latency,
    }
    result["throughput_to_ceiling_ratio"] = round(result["throughput_events_per_s"] / max(ceiling, 1), 3)
    click.echo(f"{'metric':<40}{'value':>14}")
    for key in (
        "throughput_events_per_s", "ceiling_plain_consumer_events_per_s", "faust_null_agent_events_per_s",
        "throughput_to_ceiling_ratio", "rate_events_per_s", "emit_to_redis_p50_ms", "emit_to_redis_p99_ms",
        "emit_to_alert_p50_ms", "emit_to_alert_p99_ms", "alerts_missing", "lost", "duplicated",
    ):  # fmt: skip
        click.echo(f"{key:<40}{result[key]!s:>14}")
    return result
