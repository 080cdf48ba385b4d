"""Peers benchmark: one workload, one stack, our worker against the ingestion paths a user would pick.

N events (drift events over 20 symbols, as the pipeline bench's throughput run) are emitted once with
GuardianProducer into one topic. Each peer then reads that topic from its start with a group of its
own, one after another, into the same stores:
- ours: one `guardian worker` (PostgreSQL + the Redis hot view + the alert engine);
- quix: a Quix Streams app (bench/peers/quix_app.py, in a virtualenv of its own) doing the same
  PostgreSQL and Redis writes;
- connect: Kafka Connect standalone + Debezium's JDBC sink into a table shaped like guardian_events,
  fed a JSON-with-schema copy of the same events (bench/peers/connect.py);
- ceiling: a plain confluent-kafka loop that only decodes (bench/pipeline.py).
Events/s: from the moment the peer's consumer group has its partitions (start-up, imports and a JVM's
boot are left out) to the moment the last event is a row; CPU seconds per 10k events: the peer's
process (and its children) over the same window, from /proc, with the stores' CPU beside it.
Every peer's rows are counted: rows == events and distinct event ids == events, or the row says how
many it lost or duplicated. Then, for ours and Quix, emit -> visible in Redis at 5k events/s on a fresh
topic (bench/pipeline.py's latency run; the Quix app checkpoints every 0.1 s there).
Between peers the run deletes the previous peer's rows and hot-view keys and settles the stores.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import click
from confluent_kafka.admin import AdminClient, NewTopic

from bench.machine import describe_machine
from bench.peers import connect
from bench.peers.quix_env import quix_python, quix_version
from bench.pipeline import (
    SYMBOL_PREFIX,
    _ceiling,
    _latency,
    _remove_bench_data,
    _settle_stores,
    _start_worker,
    rows_of,
)
from guardian.kafka_config import client_config
from guardian.producers import GuardianProducer
from guardian.settings import REPO_ROOT, Settings
from guardian.stack.manager import Stack

POLL_S = 0.1  # the row count's period (the pipeline bench's): the end time's error bound
STALL_S = 60.0
QUIX_THROUGHPUT_COMMIT_S = 1.0  # Quix flushes its sinks at each checkpoint; its default is 5 s
QUIX_LATENCY_COMMIT_S = 0.1
TICKS = os.sysconf("SC_CLK_TCK")
CONNECT_TABLE = "bench_peers_connect"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants (those alive now)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / TICKS
        todo.extend(children.get(current, []))
    return total


def _stores_cpu_s(settings: Settings) -> float:
    """CPU seconds of the local Redis and PostgreSQL (the postmaster and its backends)."""
    services = Stack(settings).services
    pids = [services[name].process.pid() for name in ("redis", "postgres")]
    return sum(_cpu_s(pid) for pid in pids if pid is not None)


def _admin_sql(settings: Settings, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(settings.postgres_admin_dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def verdict(events: int, rows: int, unique: int) -> dict:
    """A peer's correctness: every event a row, no event twice. A fast peer that loses rows does not win."""
    return {"rows": rows, "lost": events - unique, "duplicated": rows - unique, "correct": rows == unique == events}


def _group_assigned(admin: AdminClient, group: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until `group` has a member with partitions assigned (the consumer is about to fetch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            described = admin.describe_consumer_groups([group])[group].result(timeout=5)
            if any(member.assignment.topic_partitions for member in described.members):
                return True
        except Exception:
            pass
        time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _measure(
    settings: Settings,
    name: str,
    process: subprocess.Popen[bytes],
    group: str,
    count_rows: callable,
    events: int,
    log: Path,
) -> dict:
    """Throughput and CPU of a started peer until all `events` are rows, then stops it."""
    spawned = time.perf_counter()
    admin = AdminClient(client_config(settings))
    load = os.getloadavg()
    try:
        if not _group_assigned(admin, group, process, timeout=180):
            raise click.ClickException(f"{name}: its consumer group never got partitions; see {log}")
        began = time.perf_counter()
        cpu0, stores0 = _cpu_s(process.pid), _stores_cpu_s(settings)
        rows, unique = count_rows()
        deadline, moved_at = time.monotonic() + 600, time.monotonic()
        # A peer that lost events never gets there: the wait ends once its count stood still for STALL_S.
        while unique < events and time.monotonic() < deadline and time.monotonic() - moved_at < STALL_S:
            if process.poll() is not None:
                raise click.ClickException(f"{name} exited ({process.returncode}); see {log}")
            time.sleep(POLL_S)
            before = unique
            rows, unique = count_rows()
            if unique != before:
                moved_at = time.monotonic()
        ended = time.perf_counter()
        cpu1, stores1 = _cpu_s(process.pid), _stores_cpu_s(settings)
        time.sleep(1.0)  # anything still in flight (a redelivery) would show as a duplicate
        rows, unique = count_rows()
    finally:
        _stop(process)
    elapsed = ended - began
    return {
        "events_per_s": round(unique / elapsed) if unique else 0,
        "seconds": round(elapsed, 2),
        "startup_s": round(began - spawned, 2),
        "cpu_s_per_10k": round((cpu1 - cpu0) / max(unique, 1) * 10_000, 3),
        "cpu_cores": round((cpu1 - cpu0) / elapsed, 2),
        # What one core of the peer's own CPU time buys: the figure least moved by a busy host, where
        # events/s falls with the CPU the peer gets.
        "events_per_cpu_s": round(unique / max(cpu1 - cpu0, 1e-9)),
        "stores_cpu_s_per_10k": round((stores1 - stores0) / max(unique, 1) * 10_000, 3),
        **verdict(events, rows, unique),
        "loadavg_before": [round(x, 2) for x in load],
    }


def _produce(settings: Settings, topic: str, events: int, workdir: Path) -> tuple[str, float]:
    producer_id = f"bench-peers-{uuid.uuid4().hex[:6]}"
    began = time.perf_counter()
    with GuardianProducer(settings, producer_id=producer_id, topic=topic, spool_dir=workdir / "spool") as p:
        for i in range(events):
            p.drift(f"{SYMBOL_PREFIX}T{i % 20:02d}", metric="m", expected=1.0, observed=1.5, drift_score=float(i))
        unflushed = p.flush(120)
    if unflushed:
        raise click.ClickException(f"{unflushed} events never reached Kafka")
    return producer_id, time.perf_counter() - began


def _new_topic(settings: Settings, admin: AdminClient, prefix: str, created: list[str]) -> str:
    name = f"bench.peers.{prefix}.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, settings.events_partitions, 1)])[name].result(timeout=30)
    created.append(name)
    return name


def _ours(settings: Settings, admin: AdminClient, topic: str, producer_id: str, since: datetime, events: int,
          rate: int, seconds: float, workdir: Path, created: list[str]) -> dict:  # fmt: skip
    alerts = _new_topic(settings, admin, "alerts", created)
    group = f"bench-peers-ours-{uuid.uuid4().hex[:6]}"
    worker = _start_worker(settings, topic, alerts, group, workdir)
    result = _measure(settings, "the worker", worker, group,
                      lambda: rows_of(settings.postgres_dsn, producer_id, since),
                      events, workdir / "worker.log")  # fmt: skip
    if rate:
        result.update(_latency_run(settings, admin, "ours", rate, seconds, workdir, created))
    return result


def _quix_process(python: Path, topic: str, group: str, commit_s: float, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([str(python), "-m", "bench.peers.quix_app", topic, group, str(commit_s)],
                            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def _quix(settings: Settings, python: Path, topic: str, producer_id: str, since: datetime, events: int,
          rate: int, seconds: float, workdir: Path, admin: AdminClient, created: list[str]) -> dict:  # fmt: skip
    group = f"bench-peers-quix-{uuid.uuid4().hex[:6]}"
    app = _quix_process(python, topic, group, QUIX_THROUGHPUT_COMMIT_S, workdir / "quix.log")
    result = _measure(settings, "the Quix app", app, group,
                      lambda: rows_of(settings.postgres_dsn, producer_id, since),
                      events, workdir / "quix.log")  # fmt: skip
    result["commit_interval_s"] = QUIX_THROUGHPUT_COMMIT_S
    if rate:
        latency = _latency_run(settings, admin, "quix", rate, seconds, workdir, created, python)
        result.update(latency, latency_commit_interval_s=QUIX_LATENCY_COMMIT_S)
    return result


def _latency_run(settings: Settings, admin: AdminClient, peer: str, rate: int, seconds: float, workdir: Path,
                 created: list[str], python: Path | None = None) -> dict:  # fmt: skip
    """emit -> Redis p50/p99 at `rate` through a fresh instance of the peer on a topic of its own."""
    topic = _new_topic(settings, admin, f"lat-{peer}", created)
    group = f"bench-peers-{peer}-lat-{uuid.uuid4().hex[:6]}"
    if peer == "ours":
        alerts = _new_topic(settings, admin, "alerts", created)
        process = _start_worker(settings, topic, alerts, group, workdir)
    else:
        alerts = None
        process = _quix_process(python, topic, group, QUIX_LATENCY_COMMIT_S, workdir / "quix-latency.log")
    try:
        if not _group_assigned(admin, group, process, timeout=180):
            raise click.ClickException(f"{peer}: no partitions for the latency run; see the logs in {workdir}")
        _settle_stores(settings)
        load = [round(x, 2) for x in os.getloadavg()]
        latency = _latency(settings, topic, alerts, rate, seconds, workdir)
        latency["latency_loadavg_before"] = load
        # Fewer samples than this: the peer had not stored the last events 30 s after the run (it fell behind).
        latency["emit_to_redis_samples_expected"] = int(rate * seconds) // 25
    finally:
        _stop(process)
    keep = ("producer_id", "emit_to_redis_p50_ms", "emit_to_redis_p99_ms", "emit_to_redis_samples",
            "emit_to_redis_p99_ms_per_5s", "emit_to_alert_p99_ms", "alerts_missing",
            "latency_run_unflushed", "latency_loadavg_before",
            "emit_to_redis_samples_expected")  # fmt: skip
    return {key: latency[key] for key in keep if key in latency}


def _connect(settings: Settings, libs: Path, plugins: Path, json_topic: str, producer_id: str, since: datetime,
             events: int, workdir: Path) -> dict:  # fmt: skip
    table = CONNECT_TABLE
    _admin_sql(
        settings,
        f"DROP TABLE IF EXISTS {table}",
        # guardian_events' columns, defaults, primary key and indexes, range-partitioned on event_time like it
        f"CREATE TABLE {table} (LIKE guardian_events INCLUDING DEFAULTS INCLUDING INDEXES)"
        " PARTITION BY RANGE (event_time)",
        f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT",
    )
    overrides = {"dialect.postgres.unnest.insert.enabled": "true"}
    process, group = connect.start(settings, libs, plugins, json_topic, table, workdir, overrides)
    try:
        result = _measure(settings, "Kafka Connect", process, group,
                          lambda: rows_of(settings.postgres_admin_dsn, producer_id, since, table),
                          events, workdir / "connect.log")  # fmt: skip
    finally:
        _admin_sql(settings, f"DROP TABLE IF EXISTS {table}")
    return {**result, "connector_config": {"insert.mode": "upsert", "primary.key.fields": "event_time,event_id",
                                           **overrides}}  # fmt: skip


def _cleanup(settings: Settings, producer_ids: list[str]) -> None:
    rows, keys = _remove_bench_data(settings, producer_ids)
    click.echo(f"    removed {rows} rows, {keys} Redis keys; settling: {_settle_stores(settings)}")


def _range(values: list[float]) -> list[float] | None:
    values = [v for v in values if v is not None]
    return [min(values), max(values)] if values else None


def _summary(runs: list[dict]) -> dict:
    summary: dict[str, dict] = {}
    for peer in ("ours", "quix", "connect", "ceiling"):
        rows = [run[peer] for run in runs if peer in run]
        if not rows:
            continue
        summary[peer] = {
            "events_per_s": _range([r["events_per_s"] for r in rows]),
            "events_per_s_median": statistics.median(r["events_per_s"] for r in rows),
            "cpu_s_per_10k": _range([r.get("cpu_s_per_10k") for r in rows]),
            "events_per_cpu_s": _range([r.get("events_per_cpu_s") for r in rows]),
            "stores_cpu_s_per_10k": _range([r.get("stores_cpu_s_per_10k") for r in rows]),
            "emit_to_redis_p99_ms": _range(
                [round(r["emit_to_redis_p99_ms"]) for r in rows if "emit_to_redis_p99_ms" in r]
            ),
            "all_correct": all(r.get("correct", True) for r in rows),
        }
    for peer in ("quix", "connect", "ceiling"):
        pairs = [(run["ours"], run[peer]) for run in runs if peer in run and "ours" in run]
        if pairs:
            summary[peer]["ours_events_per_s_ratio"] = _range(
                [round(o["events_per_s"] / max(p["events_per_s"], 1), 2) for o, p in pairs]
            )
            cpu = [round(p["cpu_s_per_10k"] / o["cpu_s_per_10k"], 2) for o, p in pairs if "cpu_s_per_10k" in p]
            summary[peer]["peer_cpu_to_ours_ratio"] = _range(cpu)
    return summary


def _print_table(summary: dict, runs: int) -> None:
    def fmt(pair: list | None, unit: str = "") -> str:
        if not pair:
            return "-"
        low, high = pair
        return f"{low:g}{unit}" if low == high else f"{low:g}–{high:g}{unit}"

    click.echo(f"\npeers, {runs} run(s): ranges over the runs")
    header = f"{'peer':<9}{'events/s':>14}{'CPU s/10k':>14}{'events/CPU s':>15}{'Redis p99 ms':>18}{'rows ok':>9}"
    click.echo(header + f"{'ours ÷ peer ev/s':>19}{'peer ÷ ours CPU':>18}")
    for peer, row in summary.items():
        click.echo(
            f"{peer:<9}{fmt(row['events_per_s']):>14}{fmt(row['cpu_s_per_10k']):>14}"
            f"{fmt(row['events_per_cpu_s']):>15}{fmt(row['emit_to_redis_p99_ms']):>18}"
            f"{'yes' if row['all_correct'] else 'NO':>9}"
            f"{fmt(row.get('ours_events_per_s_ratio'), '×'):>19}{fmt(row.get('peer_cpu_to_ours_ratio'), '×'):>18}"
        )


def run_peers_bench(settings: Settings, events: int, rate: int, seconds: float, repeat: int,
                    peers: tuple[str, ...]) -> dict:  # fmt: skip
    admin = AdminClient(client_config(settings))
    created: list[str] = []
    meta: dict = {"events": events, "rate_events_per_s": rate, "latency_seconds": seconds, "peers": list(peers)}
    python = None
    if "quix" in peers:
        python = quix_python(settings)
        meta["quix"] = {
            **quix_version(python),
            "venv": "a virtualenv of its own (Quix Streams pins confluent-kafka < 2.13)",
            "postgres": "Quix's PostgreSQLSink into guardian_events (on_conflict_do_nothing, no metadata columns)",
            "redis": "a custom Quix BatchingSink running the hot view's script (Quix's RedisSink only SETs a key"
            " per message: no sequence guard, 24 h window or counters)",
            "decoding": "our codec wrapped as a Quix Deserializer",
            "work_left_out": "validation of storable events, the alert engine, the DLQ",
            "commit_interval_s": {"throughput": QUIX_THROUGHPUT_COMMIT_S, "latency": QUIX_LATENCY_COMMIT_S},
        }
    if "connect" in peers:
        libs, plugins, versions = connect.fetch(settings)
        meta["connect"] = {
            **versions,
            "input": "a JSON-with-schema copy of the same events on a topic of its own, written before timing:"
            " Confluent's Avro converter is not on Maven Central (and needs a schema registry)",
            "table": f"{CONNECT_TABLE}: guardian_events' columns, primary key and indexes, range-partitioned",
            "work_left_out": "Redis, validation, alerts (PostgreSQL only)",
        }
    runs: list[dict] = []
    loads = [os.getloadavg()]
    try:
        # Kept until the next run: the peers' logs and configs, to read when a figure looks wrong.
        workdir = settings.stack_dir.resolve() / "bench-peers"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        if True:
            topic = _new_topic(settings, admin, "events", created)
            since = datetime.now(UTC) - timedelta(minutes=10)
            click.echo(f"peers benchmark: {events} events into {topic}, once")
            producer_id, produce_s = _produce(settings, topic, events, workdir)
            meta["produce_s"] = round(produce_s, 2)
            json_topic = None
            if "connect" in peers:
                json_topic = _new_topic(settings, admin, "json", created)
                meta["connect"].update(connect.write_json_copy(settings, topic, json_topic, events))
                click.echo(f"  JSON-with-schema copy for Connect: {meta['connect']['json_copy_events']} events")
            for number in range(1, repeat + 1):
                click.echo(f"run {number}/{repeat} (load average {os.getloadavg()[0]:.2f})")
                run: dict = {}
                click.echo(f"  settling: {_settle_stores(settings)}")
                run["ceiling"] = {"events_per_s": _ceiling(settings, topic, events)}
                click.echo(f"  ceiling (decode only): {run['ceiling']['events_per_s']} events/s")
                extra_ids: list[str] = []
                if "ours" in peers:
                    run["ours"] = _ours(settings, admin, topic, producer_id, since, events, rate, seconds, workdir,
                                        created)  # fmt: skip
                    extra_ids.append(run["ours"].pop("producer_id", ""))
                    click.echo(f"  ours: {_brief(run['ours'])}")
                    _cleanup(settings, [producer_id, *extra_ids])
                if "quix" in peers:
                    run["quix"] = _quix(settings, python, topic, producer_id, since, events, rate, seconds, workdir,
                                        admin, created)  # fmt: skip
                    extra_ids.append(run["quix"].pop("producer_id", ""))
                    click.echo(f"  quix: {_brief(run['quix'])}")
                    _cleanup(settings, [producer_id, *extra_ids])
                if "connect" in peers:
                    run["connect"] = _connect(settings, libs, plugins, json_topic, producer_id, since, events,
                                              workdir)  # fmt: skip
                    click.echo(f"  connect: {_brief(run['connect'])}")
                    click.echo(f"    settling: {_settle_stores(settings)}")
                run["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                loads.append(os.getloadavg())
                runs.append(run)
    finally:
        if created:
            admin.delete_topics(created)
    summary = _summary(runs)
    _print_table(summary, len(runs))
    return {
        "machine": describe_machine(),
        **meta,
        "loadavg_1m_range": _range([round(load[0], 2) for load in loads]),
        "summary": summary,
        "runs": runs,
    }


def _brief(row: dict) -> str:
    said = f"{row['events_per_s']} events/s, {row['cpu_s_per_10k']} CPU s/10k, rows {row['rows']}"
    if not row["correct"]:
        said += f" (lost {row['lost']}, duplicated {row['duplicated']})"
    if "emit_to_redis_p99_ms" in row:
        said += f", emit->Redis p99 {row['emit_to_redis_p99_ms']} ms"
    return said
