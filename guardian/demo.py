"""`guardian demo`: the platform end to end with a simulated trading host.

Brings the local stack up (if it is not), starts one Faust worker, emits a
realistic mix of guardrail events through the producer library and shows one
live status line. With --seconds N it stops after N seconds, waits for the
pipeline to drain, stops what it started, and prints as its last line
`demo: emitted=<n> stored=<n> lost=<n>` (stored counted in PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click

from guardian.kafka_config import client_config
from guardian.settings import Settings, get_settings
from guardian.simulator import TradingHostSimulator


def alerts_firing(settings: Settings) -> int | str:
    """Alerts firing across the fleet (the Redis set `guardian alerts list` reads)."""
    import redis

    from guardian.stream_processors.alerts.outputs import ACTIVE_SET

    try:
        return int(redis.Redis.from_url(settings.redis_url, socket_timeout=1).scard(ACTIVE_SET))
    except redis.RedisError:
        return "?"


def consumer_lag(settings: Settings) -> int | None:
    """Sum over partitions of (high watermark - committed offset) for the worker fleet's group."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(client_config(settings, {"group.id": settings.worker_group, "log_level": 0}))
    try:
        partitions = [TopicPartition(settings.events_topic, p) for p in range(settings.events_partitions)]
        committed = consumer.committed(partitions, timeout=5)
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=5)
            lag += high - tp.offset if tp.offset >= 0 else high
        return lag
    except Exception:  # lag is informative only; a slow broker must not stop the demo
        return None
    finally:
        consumer.close()


async def stored_rows(dsn: str, producer_id: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM guardian_events WHERE producer_id = $1", producer_id)
    finally:
        await conn.close()


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    log_path = settings.stack_dir / "logs" / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    guardian = str(Path(sys.executable).with_name("guardian"))
    with open(log_path, "ab") as log:
        return subprocess.Popen([guardian, "worker"], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def start_api(settings: Settings) -> tuple[subprocess.Popen[bytes] | None, str]:
    """The query API and dashboard for this demo, with a one-off admin token (only this process knows it);
    None when something already listens on the API's port."""
    with socket.socket() as probe:
        if probe.connect_ex((settings.api_host, settings.api_port)) == 0:
            return None, ""
    token = secrets.token_urlsafe(24)
    log_path = settings.stack_dir / "logs" / "demo-api.log"
    guardian = str(Path(sys.executable).with_name("guardian"))
    with open(log_path, "ab") as log:
        api = subprocess.Popen([guardian, "api"], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "GUARDIAN_API_TOKEN": token})  # fmt: skip
    return api, token


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@click.command()
@click.option("--seconds", type=float, default=0.0, help="Run this long, then drain and stop (0 = until Ctrl-C).")
@click.option("--rate", type=int, default=1000, show_default=True, help="Base events/s; bursts go 5x above it.")
@click.option("--drain-timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the drain.")
def demo(seconds: float, rate: int, drain_timeout: float) -> None:
    """Run the platform with a simulated trading host and a live status line."""
    from guardian.producers import GuardianProducer
    from guardian.stack.manager import Stack

    settings = get_settings()
    stack = Stack(settings)
    started_services = [name for name, pid in stack.pids().items() if pid is None]
    stack.up(report=lambda line: click.echo(f"stack: {line}"))
    worker = start_worker(settings)
    api, token = start_api(settings)
    where = f"http://{settings.api_host}:{settings.api_port}/"
    if api is None:
        click.echo(f"demo: something already serves {where}; the dashboard there is not this demo's")
    else:
        click.echo(f"demo: dashboard at {where} — log in with this run's token {token}")
    producer_id = f"demo-{uuid.uuid4().hex[:8]}"
    simulator = TradingHostSimulator()
    interrupted = False

    def on_sigint(*_: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_sigint)
    emitted = 0
    try:
        with GuardianProducer(producer_id=producer_id) as producer:
            began = time.monotonic()
            next_status = began + 1.0
            last_emitted = last_stored = stored = 0
            owed = 0.0
            last_tick = began
            while not interrupted and (seconds <= 0 or time.monotonic() - began < seconds):
                now = time.monotonic()
                elapsed = now - began
                # Pace by the clock: emit what the target rate owes since the last tick, then nap 10 ms.
                owed += rate * simulator.rate_multiplier(elapsed) * (now - last_tick)
                last_tick = now
                while owed >= 1:
                    owed -= 1
                    for decision in simulator.decisions(elapsed):
                        producer.emit(
                            {
                                "symbol": decision.symbol,
                                "detector": decision.detector,
                                "severity": decision.severity,
                                "payload": (decision.payload_type, decision.payload),
                            }
                        )
                        emitted += 1
                if worker.poll() is not None:
                    raise click.ClickException(f"the worker exited with {worker.returncode}; see its log")
                if time.monotonic() >= next_status:
                    stored = asyncio.run(stored_rows(settings.postgres_dsn, producer_id))
                    lag = consumer_lag(settings)
                    click.echo(
                        f"\r[{elapsed:6.1f}s] emitted {emitted - last_emitted:>6}/s  stored {stored - last_stored:>6}/s"
                        f"  lag {lag if lag is not None else '?':>6}  rows {stored:>9}  "
                        f"spooled {producer.stats().get('spooled', 0):>6}  alerts firing {alerts_firing(settings):>3}",
                        nl=False,
                    )
                    last_emitted, last_stored = emitted, stored
                    next_status += 1.0
                time.sleep(0.01)
            click.echo("\ndemo: draining the pipeline...")
            producer.flush(timeout=drain_timeout)
        deadline = time.monotonic() + drain_timeout
        stored = asyncio.run(stored_rows(settings.postgres_dsn, producer_id))
        while stored < emitted and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
            stored = asyncio.run(stored_rows(settings.postgres_dsn, producer_id))
    finally:
        stop_process(worker)
        if api is not None:
            stop_process(api)
        for name in started_services:  # only what this demo started; a stack that was up stays up
            stack.down(report=lambda line: click.echo(f"stack: {line}"), only=name)
    click.echo(f"demo: emitted={emitted} stored={stored} lost={emitted - stored}")
    sys.exit(0 if stored == emitted else 1)
