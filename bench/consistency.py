"""Replay and verification benchmark: how fast operators can re-drive and check the log, and what it costs
the live fleet, on this machine against the local stack.

1. `verify`: N events (default 1,000,000) loaded through one worker, then `guardian verify` over all of
   them, 3 runs; baselines in the same run: reading the same offsets from Kafka without decoding, and
   counting the rows in PostgreSQL.
2. `replay under live load`: the fleet ingests 1,000 events/s (emit -> Redis p99 sampled as in the
   pipeline benchmark) while `guardian replay` re-drives the loaded events beside it, back to back;
   the same live run without a replay is the baseline.
3. `periodic verifier cost`: a burst's throughput with the periodic verifier off, then running every
   5 s over the whole loaded window (far more often than the default 300 s).

It uses its own topics, a database of its own (created and dropped) and Redis database
GUARDIAN_BENCH_REDIS_DB (default 5), so nothing it does shows in the stack's stores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import click
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from bench.machine import describe_machine
from bench.pipeline import GUARDIAN, _latency, _throughput
from bench.recovery import Fleet, _emit, _lag
from bench.stores import isolated
from guardian.kafka_config import client_config
from guardian.kafka_ranges import consume_ranges
from guardian.settings import Settings
from guardian.stack.process import wait_until
from guardian.stream_processors.consistency.window import take_window

RUNS = 3
REPLAY_MAX_RATES = (0, 5000)  # as fast as the stores take it, and guardian replay's default
BURST = 200_000
REPLAY_LINE = re.compile(r"replayed ([\d,]+) events in ([\d.]+) s \(([\d,]+)/s\)")


def _cli_env(settings: Settings, group: str) -> dict[str, str]:
    return {**os.environ, "GUARDIAN_EVENTS_TOPIC": settings.events_topic, "GUARDIAN_WORKER_GROUP": group,
            "GUARDIAN_POSTGRES_DSN": settings.postgres_dsn, "GUARDIAN_POSTGRES_ADMIN_DSN": settings.postgres_admin_dsn,
            "GUARDIAN_REDIS_URL": settings.redis_url,
            "GUARDIAN_LOG_LEVEL": "WARNING"}  # fmt: skip


def _verify_runs(settings: Settings, group: str) -> dict:
    runs = []
    for _ in range(RUNS):
        out = subprocess.run([GUARDIAN, "verify", "--since", "2h", "--settle", "1s", "--json"],
                             env=_cli_env(settings, group), capture_output=True, text=True, timeout=900)  # fmt: skip
        report = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(report)
        click.echo(f"  verify: {report['events']:,} offsets in {report['seconds']} s, ok={report['ok']}")
    window = take_window(settings.model_copy(update={"worker_group": group}), 7200, 1)
    began = time.perf_counter()
    consumer = Consumer(client_config(settings, {"group.id": f"bench-read-{uuid.uuid4().hex[:6]}", "log_level": 0}))
    read = sum(len(batch) for batch in consume_ranges(consumer, settings.events_topic, window.ranges))
    consumer.close()
    kafka_s = time.perf_counter() - began

    async def count() -> tuple[int, float]:
        conn = await asyncpg.connect(settings.postgres_dsn)
        try:
            began = time.perf_counter()
            rows = await conn.fetchval("SELECT count(*) FROM guardian_events WHERE event_time > now() - interval '2h'")
            return rows, time.perf_counter() - began
        finally:
            await conn.close()

    rows, count_s = asyncio.run(count())
    seconds = [r["seconds"] for r in runs]
    events = runs[-1]["events"]
    return {
        "verify_events": events,
        "verify_seconds": seconds,
        "verify_events_per_s": [round(events / s) for s in seconds],
        "verify_all_ok": all(r["ok"] for r in runs),
        "baseline_kafka_read_events_per_s": round(read / kafka_s),
        "baseline_pg_count_rows_per_s": round(rows / count_s),
    }


def _live(settings: Settings, workdir: Path, rate: int, seconds: float) -> dict:
    result = _latency(settings, settings.events_topic, settings.alerts_topic, rate, seconds, workdir)
    return {"p99": result["emit_to_redis_p99_ms"], "p50": result["emit_to_redis_p50_ms"]}


def _live_with_replays(settings: Settings, group: str, workdir: Path, rate: int, seconds: float,
                       max_rate: float) -> dict:  # fmt: skip
    """The live run while `guardian replay --max-rate max_rate` re-drives the loaded events, back to back."""
    stop = threading.Event()
    replays: list[tuple[int, float]] = []

    def replay_back_to_back() -> None:
        while not stop.is_set():
            command = [GUARDIAN, "replay", "--from", "2h", "--quiet", "--max-rate", str(max_rate)]
            out = subprocess.run(command, env=_cli_env(settings, group), capture_output=True, text=True, timeout=900)
            if (match := REPLAY_LINE.search(out.stdout)) is None:
                click.echo(f"  replay failed: {out.stderr[-500:]}")
                return
            replays.append((int(match[1].replace(",", "")), float(match[2])))

    replayer = threading.Thread(target=replay_back_to_back, daemon=True)
    replayer.start()
    time.sleep(3)  # the replay is under way before the latency run's lead-in starts
    live = _live(settings, workdir, rate, seconds)
    stop.set()
    replayer.join(timeout=900)
    return {**live, "replay_events_per_s": [round(n / s) for n, s in replays]}


def _replay_under_load(settings: Settings, group: str, workdir: Path, rate: int, seconds: float) -> dict:
    click.echo(f"  live {rate} events/s, no replay (baseline)")
    out: dict = {"live_rate_events_per_s": rate, "live_alone": _live(settings, workdir, rate, seconds)}
    for max_rate in REPLAY_MAX_RATES:
        label = f"max_rate_{max_rate}" if max_rate else "unlimited"
        click.echo(f"  live {rate} events/s with guardian replay --max-rate {max_rate} back to back")
        out[f"live_during_replay_{label}"] = _live_with_replays(settings, group, workdir, rate, seconds, max_rate)
        click.echo(f"    {out[f'live_during_replay_{label}']}")
    return out


def _verifier_cost(settings: Settings, workdir: Path) -> dict:
    out: dict = {}
    for label, interval in (("off", "0"), ("every_5s", "5")):
        fleet = Fleet(settings, workdir, "30")
        fleet.env.update({"GUARDIAN_VERIFY_INTERVAL_S": interval, "GUARDIAN_VERIFY_WINDOW_S": "7200",
                          "GUARDIAN_POSTGRES_DSN": settings.postgres_dsn,
                          "GUARDIAN_POSTGRES_ADMIN_DSN": settings.postgres_admin_dsn})  # fmt: skip
        worker = fleet.start()
        try:
            result = _throughput(settings, settings.events_topic, BURST, workdir, worker)
            out[f"throughput_verifier_{label}_events_per_s"] = result["throughput_events_per_s"]
            runs = re.findall(r'guardian_consistency_runs_total\{outcome="(\w+)"\} ([\d.]+)', fleet.metrics())
            out[f"verifier_{label}_runs"] = {outcome: int(float(n)) for outcome, n in runs}
        finally:
            fleet.stop()
        click.echo(f"  verifier {label}: {out[f'throughput_verifier_{label}_events_per_s']} events/s")
    return out


def run_consistency_bench(settings: Settings, events: int, rate: int, seconds: float) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /metrics scrape otherwise
    result: dict = {"machine": describe_machine(), "events": events}
    try:
        with isolated(settings, "consistency") as bench, tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            fleet = Fleet(bench, workdir, "30")
            fleet.env["GUARDIAN_VERIFY_INTERVAL_S"] = "0"
            fleet.start()
            try:
                click.echo(f"consistency benchmark: {events:,} events through one worker")
                began = time.perf_counter()
                _emit(bench, f"bench-load-{uuid.uuid4().hex[:8]}", events, workdir / "spool-load")
                wait_until(lambda: _lag(bench, fleet.group) == 0, timeout=1800)
                result["load_events_per_s"] = round(events / (time.perf_counter() - began))
                click.echo(f"  loaded at {result['load_events_per_s']:,} events/s")
                result.update(_verify_runs(bench, fleet.group))
                result.update(_replay_under_load(bench, fleet.group, workdir, rate, seconds))
            finally:
                fleet.stop()
            result.update(_verifier_cost(bench, workdir))
    finally:
        admin = AdminClient(client_config(settings))  # the fleets' own state topics
        admin.delete_topics([t for t in admin.list_topics(timeout=10).topics if t.startswith("bench-recovery-")])
    click.echo(f"{'metric':<46}{'value':>24}")
    for key, value in result.items():
        if key != "machine":
            click.echo(f"{key:<46}{value!s:>24}")
    return result
