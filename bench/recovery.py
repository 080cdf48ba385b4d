"""Recovery benchmark: how fast state comes back, on this machine, against the local stack.

1. `checkpoint_cost`: one worker loads N events with checkpoints every second, then the same
   with checkpoints off: throughput both ways, and the worker's own checkpoint time and size.
2. `host_restore_ms`: 1,000,000 events over 1,000 symbols x 3 detectors are loaded and
   checkpointed; 20 restores of all 1,000 symbols with the hot view up (the worker running on, at
   the default checkpoint interval), then 20 with Redis wiped (newest fleet checkpoint + the Kafka
   tail after it, 25,000 events: 5 s at 5k/s).
3. `hot_view_rebuild_s` after FLUSHDB with those events in the topic: by checkpoint (when the
   newest events and breakers are current, and when the 24 h window is refilled too) and by a
   full replay (no checkpoint).
4. `worker_kill_caught_up_s`: 3 workers, 5,000 events/s, one killed with SIGKILL: seconds until
   the group's committed lag is back under one second of events (5,000); with the default consumer
   session (6 s) and with 2 s sessions.

The bench uses its own topics, group and Redis database (GUARDIAN_BENCH_REDIS_DB, default 5),
so FLUSHDB never touches the hot view of the stack it runs on; its rows are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import click
import httpx
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.machine import describe_machine
from bench.pipeline import GUARDIAN, SYMBOL_PREFIX, _remove_bench_data, _settle_stores, _wait_until_stored
from guardian.kafka_config import client_config
from guardian.producers import GuardianProducer
from guardian.producers.restore import restore
from guardian.schemas.checkpoint import TOPIC_CONFIG
from guardian.settings import Settings
from guardian.stack.process import free_port, wait_until
from guardian.stream_processors.recovery.fleet import committed_offsets
from guardian.stream_processors.recovery.rebuild import rebuild_hot_view

SYMBOLS = 1000
RESTORES = 20
TAIL_EVENTS = 25_000
KILL_RATE = 5000
OFF = "1000000000"  # a checkpoint interval no run reaches


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Fleet:
    """Workers of one group on the bench's topics and Redis database."""

    def __init__(self, settings: Settings, workdir: Path, interval: str) -> None:
        self.settings = settings
        self.workdir = workdir
        self.group = f"bench-recovery-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "GUARDIAN_EVENTS_TOPIC": settings.events_topic,
            "GUARDIAN_ALERTS_TOPIC": settings.alerts_topic,
            "GUARDIAN_CHECKPOINTS_TOPIC": settings.checkpoints_topic,
            "GUARDIAN_REDIS_URL": settings.redis_url,
            "GUARDIAN_POSTGRES_DSN": settings.postgres_dsn,
            "GUARDIAN_POSTGRES_ADMIN_DSN": settings.postgres_admin_dsn,
            "GUARDIAN_WORKER_GROUP": self.group,
            "GUARDIAN_CHECKPOINT_INTERVAL_S": interval,
            "GUARDIAN_LOG_LEVEL": "WARNING",
        }
        self.workers: list[tuple[subprocess.Popen[bytes], int]] = []

    def start(self) -> subprocess.Popen[bytes]:
        port = free_port()
        env = {**self.env, "GUARDIAN_WORKER_WEB_PORT": str(port),
               "GUARDIAN_WORKER_DATA_DIR": str(self.workdir / f"worker-{port}")}  # fmt: skip
        log = open(self.workdir / f"worker-{port}.log", "wb")  # noqa: SIM115 - handed to the child
        worker = subprocess.Popen([GUARDIAN, "worker"], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.workers.append((worker, port))
        return worker

    def metrics(self, index: int = 0) -> str:
        return httpx.get(f"http://127.0.0.1:{self.workers[index][1]}/metrics", timeout=5).text

    def stop(self) -> None:
        for worker, _ in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker, _ in self.workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.workers = []

    def settings_for_group(self) -> Settings:
        return self.settings.model_copy(update={"worker_group": self.group})


def _lag(settings: Settings, group: str) -> int:
    committed = committed_offsets(settings.model_copy(update={"worker_group": group}))
    consumer = Consumer(client_config(settings, {"group.id": "bench-lag", "log_level": 0}))
    try:
        partitions = consumer.list_topics(settings.events_topic, timeout=10).topics[settings.events_topic].partitions
        total = 0
        for partition in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(settings.events_topic, partition), timeout=10)
            total += high - committed.get(partition, 0)
        return total
    finally:
        consumer.close()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _emit(settings: Settings, producer_id: str, count: int, spool: Path, start: int = 0) -> None:
    with GuardianProducer(settings, producer_id=producer_id, spool_dir=spool) as producer:
        for n in range(start, start + count):
            symbol = f"{SYMBOL_PREFIX}R{n % SYMBOLS:04d}"
            kind = (n // SYMBOLS) % 3
            if kind == 0:
                producer.latency_spike(symbol, observed_latency_us=100 + n % 900, threshold_us=5000, p50_us=100,
                                       p99_us=400, p999_us=900)  # fmt: skip
            elif kind == 1:
                producer.drift(symbol, metric=f"m{n % 4}", expected=1.0, observed=1.1, drift_score=0.5)
            else:
                producer.circuit_breaker(symbol, "CLOSED", "HALF_OPEN", reason="bench", trip_count=n)
        if producer.flush(300):
            raise click.ClickException("the bench's events were not all acknowledged by Kafka")


def _checkpoint_cost(settings: Settings, workdir: Path, events: int) -> dict:
    out: dict = {}
    for label, interval in (("on_1s", "1"), ("off", OFF)):
        fleet = Fleet(settings, workdir, interval)
        worker = fleet.start()
        producer_id = f"bench-ckpt-{label}-{uuid.uuid4().hex[:6]}"
        try:
            # The clock starts once the worker has joined and stored one event: throughput, not start-up.
            _emit(settings, f"{producer_id}-ready", 1, workdir / f"spool-{label}-ready")
            _wait_until_stored(settings, f"{producer_id}-ready", 1, worker, workdir)
            out.setdefault("producer_ids", []).append(f"{producer_id}-ready")
            began = time.perf_counter()
            _emit(settings, producer_id, events, workdir / f"spool-{label}")
            _, unique = _wait_until_stored(settings, producer_id, events, worker, workdir)
            out[f"throughput_{label}_events_per_s"] = round(unique / (time.perf_counter() - began))
            text = fleet.metrics()
            if label == "on_1s":
                count = _metric(text, "guardian_recovery_checkpoint_seconds_count")
                total = _metric(text, "guardian_recovery_checkpoint_seconds_sum")
                out["checkpoints_written"] = int(count)
                out["checkpoint_actions"] = [line for line in text.splitlines()
                                             if line.startswith("guardian_recovery_actions_total")]  # fmt: skip
                out["checkpoint_write_ms_mean"] = round(1000 * total / max(count, 1), 1)
                out["checkpoint_bytes"] = int(_metric(text, "guardian_recovery_checkpoint_bytes"))
        finally:
            fleet.stop()
            out.setdefault("producer_ids", []).append(producer_id)
        click.echo(f"  checkpoints {label}: {out[f'throughput_{label}_events_per_s']} events/s")
    return out


def _restores(settings: Settings, symbols: list[str], producer_id: str, spool: Path) -> tuple[list[float], set[str]]:
    times, sources = [], set()
    for _ in range(RESTORES):
        state = restore(settings, producer_id, spool, symbols, 10.0)
        if state.snapshot_source != "local":
            raise click.ClickException(f"the host's snapshot did not come from its spool directory: {state.problems}")
        times.append(state.elapsed_ms)
        sources.add(state.source)
        if len(state.symbols) != len(symbols):
            raise click.ClickException(f"restore gave {len(state.symbols)} symbols of {len(symbols)}: {state.problems}")
    return times, sources


def _restore_and_rebuild(settings: Settings, workdir: Path, events: int) -> dict:
    fleet = Fleet(settings, workdir, str(settings.checkpoint_interval_s))  # the default: restores run beside it
    fleet_settings = fleet.settings_for_group()
    producer_id = f"bench-load-{uuid.uuid4().hex[:6]}"
    click.echo(f"  loading {events:,} events over {SYMBOLS} symbols x 3 detectors")
    _emit(settings, producer_id, events, workdir / "spool-load")
    with GuardianProducer(settings, producer_id=producer_id, spool_dir=workdir / "spool-load") as host:
        host.checkpoint({"baselines": {f"{SYMBOL_PREFIX}R{i:04d}": [0.1] * 8 for i in range(SYMBOLS)}})
    worker = fleet.start()
    client = redis.Redis.from_url(settings.redis_url)
    out: dict = {"producer_ids": [producer_id]}
    try:
        began = time.perf_counter()
        wait_until(lambda: worker.poll() is not None or _lag(settings, fleet.group) == 0, timeout=1800, interval=1.0)
        click.echo(f"  one worker took {time.perf_counter() - began:.0f} s to ingest them")
        caught_up_us = time.time_ns() // 1000
        wait_until(lambda: int(client.hget("guardian:hotview", "checkpoint") or 0) > caught_up_us,
                   timeout=settings.checkpoint_interval_s + 60)  # fmt: skip
        symbols = [f"{SYMBOL_PREFIX}R{i:04d}" for i in range(SYMBOLS)]
        with_redis, sources = _restores(fleet_settings, symbols, producer_id, workdir / "spool-load")
        out.update(host_restore_with_redis_p50_ms=_percentile(with_redis, 0.5),
                   host_restore_with_redis_p99_ms=_percentile(with_redis, 0.99),
                   host_restore_with_redis_ms=[round(t, 1) for t in with_redis],
                   host_restore_with_redis_source=",".join(sorted(sources)))  # fmt: skip
    finally:
        fleet.stop()
    _emit(settings, producer_id, TAIL_EVENTS, workdir / "spool-tail", start=events)  # after the last checkpoint
    client.flushdb()
    without, sources = _restores(fleet_settings, symbols, producer_id, workdir / "spool-load")
    out.update(host_restore_without_redis_p50_ms=_percentile(without, 0.5),
               host_restore_without_redis_p99_ms=_percentile(without, 0.99),
               host_restore_without_redis_ms=[round(t, 1) for t in without],
               host_restore_without_redis_source=",".join(sorted(sources)),
               host_restore_tail_events=TAIL_EVENTS)  # fmt: skip
    click.echo(f"  restore of {SYMBOLS} symbols: p99 {out['host_restore_with_redis_p99_ms']} ms with Redis, "
               f"{out['host_restore_without_redis_p99_ms']} ms without")  # fmt: skip
    report = asyncio.run(rebuild_hot_view(fleet_settings, reason="bench"))
    out.update(hot_view_rebuild_by_checkpoint_current_s=report.current_after_s,
               hot_view_rebuild_by_checkpoint_s=report.seconds,
               hot_view_rebuild_by_checkpoint_source=report.source)  # fmt: skip
    client.flushdb()
    no_checkpoint = fleet_settings.model_copy(update={"checkpoints_topic": f"{settings.checkpoints_topic}.empty"})
    replay = asyncio.run(rebuild_hot_view(no_checkpoint, reason="bench: full replay"))
    out.update(hot_view_rebuild_full_replay_current_s=replay.current_after_s,
               hot_view_rebuild_full_replay_s=replay.seconds,
               hot_view_rebuild_events=replay.tail_events + replay.window_events)  # fmt: skip
    click.echo(f"  rebuild: current after {report.current_after_s} s and whole in {report.seconds} s by checkpoint;"
               f" {replay.seconds} s by full replay of {out['hot_view_rebuild_events']:,} events")  # fmt: skip
    return out


def _worker_kill(settings: Settings, workdir: Path, session_ms: int, watch_s: float = 45.0) -> dict:
    fleet = Fleet(settings, workdir, "30")
    fleet.env["GUARDIAN_WORKER_SESSION_TIMEOUT_MS"] = str(session_ms)
    fleet.env["GUARDIAN_WORKER_HEARTBEAT_INTERVAL_MS"] = str(session_ms // 4)
    for _ in range(3):
        fleet.start()
    producer_id = f"bench-kill-{uuid.uuid4().hex[:6]}"
    stop = threading.Event()

    def steady() -> None:  # until told to stop: the lag after the kill must keep growing while nobody reads
        with GuardianProducer(settings, producer_id=producer_id, spool_dir=workdir / f"spool-kill-{session_ms}") as p:
            began = time.monotonic()
            n = 0
            while not stop.is_set():
                p.drift(f"{SYMBOL_PREFIX}K{n % 100:03d}", metric="m", expected=1.0, observed=1.0, drift_score=0.1)
                n += 1
                time.sleep(max(0.0, began + n / KILL_RATE - time.monotonic()))
            p.flush(60)

    emitter = threading.Thread(target=steady)
    label = f"session_{session_ms}ms"
    out: dict = {"producer_ids": [producer_id]}
    try:
        emitter.start()
        if not wait_until(lambda: _lag(settings, fleet.group) < KILL_RATE, timeout=180, interval=0.5):
            raise click.ClickException("the 3 workers never kept up with 5,000 events/s before the kill")
        time.sleep(10)  # steady state
        victim, _ = fleet.workers[0]
        victim.kill()
        killed = time.monotonic()
        series: list[tuple[float, int]] = []
        while time.monotonic() - killed < watch_s:
            series.append((round(time.monotonic() - killed, 2), _lag(settings, fleet.group)))
            time.sleep(0.2)
        # Back under one second of events for good: the last moment the lag was at or above it.
        over = [at for at, lag in series if lag >= KILL_RATE]
        out[f"worker_kill_caught_up_s_{label}"] = over[-1] if over else 0.0
        out[f"worker_kill_peak_lag_{label}"] = max(lag for _, lag in series)
        out[f"worker_kill_lag_series_{label}"] = series[:: max(1, len(series) // 60)]
        click.echo(f"  kill -9 of 1 of 3 workers at {KILL_RATE}/s, {session_ms} ms sessions: lag back under "
                   f"{KILL_RATE} after {out[f'worker_kill_caught_up_s_{label}']} s "
                   f"(peak {out[f'worker_kill_peak_lag_{label}']})")  # fmt: skip
    finally:
        stop.set()
        emitter.join(timeout=120)
        fleet.stop()
    return out


def run_recovery_bench(settings: Settings, events: int, checkpoint_events: int) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /metrics scrape otherwise
    suffix = uuid.uuid4().hex[:8]
    events_topics = [f"bench.recovery.{phase}.{suffix}" for phase in ("cost", "load", "kill", "kill2")]
    checkpoints_topic = f"bench.recovery.checkpoints.{suffix}"
    alerts_topic = f"bench.recovery.alerts.{suffix}"
    admin = AdminClient(client_config(settings))
    wanted = [NewTopic(name, settings.events_partitions, 1) for name in events_topics]
    wanted += [NewTopic(alerts_topic, 3, 1), NewTopic(checkpoints_topic, 1, 1, config=TOPIC_CONFIG)]
    wanted.append(NewTopic(f"{checkpoints_topic}.empty", 1, 1, config=TOPIC_CONFIG))  # the full replay's
    for future in admin.create_topics(wanted).values():
        future.result(timeout=30)
    database = int(os.environ.get("GUARDIAN_BENCH_REDIS_DB", "5"))
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{database}"
    bench = settings.model_copy(
        update={"redis_url": redis_url, "alerts_topic": alerts_topic, "checkpoints_topic": checkpoints_topic}
    )
    cost, load, kill, kill_short = (bench.model_copy(update={"events_topic": name}) for name in events_topics)
    redis.Redis.from_url(redis_url).flushdb()
    producer_ids: list[str] = []
    result: dict = {"machine": describe_machine(), "events": events, "symbols": SYMBOLS, "restores": RESTORES}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            click.echo(f"recovery benchmark: local stack, Redis database {database}")
            click.echo(f"  settling: {_settle_stores(settings)}")
            for part in (
                _checkpoint_cost(cost, workdir, checkpoint_events),
                _restore_and_rebuild(load, workdir, events),
                _worker_kill(kill, workdir, settings.worker_session_timeout_ms),  # the default
                _worker_kill(kill_short, workdir, 2000),  # as docs/recovery.md advises
            ):
                producer_ids += part.pop("producer_ids", [])
                result.update(part)
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        made = [t for t in admin.list_topics(timeout=10).topics if suffix in t or t.startswith("bench-recovery-")]
        admin.delete_topics(made)
        rows, _ = _remove_bench_data(settings, producer_ids)
        click.echo(f"  removed the bench's data: {rows} rows; settling: {_settle_stores(settings)}")
    click.echo(f"{'metric':<46}{'value':>14}")
    for key, value in result.items():
        if key != "machine" and not isinstance(value, list):
            click.echo(f"{key:<46}{value!s:>14}")
    return result
