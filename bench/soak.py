"""Soak: N minutes at 5,000 events/s through a worker fleet, alerts firing and resolving, `guardian verify`
every few minutes; does anything grow or slow down?

- a trading host (bench/soak_producer.py, a process of its own) emits the simulator's mix over 20 symbols
  at the rate, a circuit breaker opening every 10 s and closing 5 s later (a P0 fired and resolved);
- `--workers` `guardian worker`s (default 2) on the soak's own topics, a database of its own (created and
  dropped) and Redis database GUARDIAN_SOAK_REDIS_DB (default 6), so the figures are the soak's alone;
- after a 10 s lead-in at the rate, every SAMPLE_S (30 s; 10 s for runs under 10 minutes): RSS and CPU
  seconds of the producer, each worker (with its children: the periodic jobs run in child processes),
  Kafka, Redis and PostgreSQL (the postmaster and its backends), the load average, Redis used_memory,
  the size of guardian_events (every partition), the rows of guardian_alert_changes and
  guardian_notifications;
- emit -> visible in Redis on every 25th event (a poller reads the hot view's sequence guard every 2 ms,
  as in bench/pipeline.py), p50/p99 per 5-minute window (1 minute for runs under 15 minutes);
- the fleet verifies itself every 5 minutes (40 s for short runs) over the last 1.5x that
  (GUARDIAN_VERIFY_INTERVAL_S / GUARDIAN_VERIFY_WINDOW_S: `guardian verify` in a niced child of the
  owner of partition 0, killed if it overruns); the bench reads each outcome from the workers' metrics,
  and runs `guardian verify --json` once over the whole run at the end, once everything is stored;
- at the end: rows and distinct event ids in PostgreSQL against what was emitted (lost, duplicated),
  and the alert history's FIRING/RESOLVED rows per rule.

Bars: each guardian process's RSS (producer, workers) grows < 10% from the sample at 5 minutes (the
middle of a run under 25 minutes) to the last; p99 of the last window <= 1.5x the first; 0 lost, 0
duplicated; every periodic verification clean, and the final one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

import asyncpg
import click
import httpx
import redis
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from bench.machine import describe_machine
from bench.pipeline import GUARDIAN, POLL_INTERVAL_S, _percentile
from bench.recovery import Fleet, _lag
from bench.stores import isolated
from guardian.kafka_config import client_config
from guardian.settings import REPO_ROOT, Settings

LEAD_IN_S = 10.0
SAMPLE_EVERY = 25  # every 25th event is an emit -> Redis sample (200/s at 5k/s)
RSS_BAR_PCT = 10.0
P99_BAR_RATIO = 1.5
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def plan(minutes: float) -> dict:
    """The run's cadences: the issue's for a long run, scaled down for a short one (the 2-minute test)."""
    seconds = minutes * 60
    return {
        "seconds": seconds,
        "window_s": 300.0 if seconds >= 15 * 60 else 60.0,
        "sample_s": 30.0 if seconds >= 10 * 60 else 10.0,
        "verify_every_s": 300.0 if seconds >= 15 * 60 else 40.0,
        # 5 minutes into a long run; the middle of a short one: in the 2-minute run the workers' RSS was
        # still rising through its first minute (102 -> 122 MiB, then flat), so "after the first 20%"
        # (24 s) measured their warm-up, not growth (+13% and +15% on 2026-11-30)
        "rss_baseline_at_s": 300.0 if seconds >= 25 * 60 else 0.5 * seconds,
    }


# -- processes -------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            tree[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    return tree


def _one(pid: int) -> tuple[int, float, int] | None:
    """(RSS bytes, CPU seconds, PSS bytes) of `pid`, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        pss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))  # fmt: skip
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return rss, (int(fields[11]) + int(fields[12])) / CLK_TCK, pss


def _process(pid: int | None, tree: dict[int, list[int]]) -> dict | None:
    """The process's own RSS and CPU, and those of it with every descendant (PostgreSQL's backends, a
    worker's verifier child) as PSS: shared memory (PostgreSQL's shared buffers) counted once, not per
    process as summed RSS would."""
    if pid is None or (own := _one(pid)) is None:
        return None
    total_pss, total_cpu, count, todo = own[2], own[1], 1, list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        todo.extend(tree.get(child, []))
        if (figures := _one(child)) is not None:
            total_pss, total_cpu, count = total_pss + figures[2], total_cpu + figures[1], count + 1
    return {"pid": pid, "rss_mib": round(own[0] / MIB, 1), "cpu_s": round(own[1], 1),
            "tree_pss_mib": round(total_pss / MIB, 1), "tree_cpu_s": round(total_cpu, 1),
            "tree_processes": count}  # fmt: skip


def _busy_cores() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / CLK_TCK, sum(ticks[:8]) / CLK_TCK


def _stack_pids(settings: Settings) -> dict[str, int | None]:
    """The local stack's service pids (None for each under another backend, e.g. testcontainers)."""
    try:
        from guardian.stack.manager import Stack

        return Stack(settings).pids()
    except Exception:  # no local stack: the services' RSS is not ours to read
        return {"kafka": None, "redis": None, "postgres": None}


async def _stores(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint"
            "        FROM pg_partition_tree('guardian_events')) AS events_bytes,"
            " (SELECT count(*) FROM guardian_alert_changes) AS alert_changes,"
            " (SELECT count(*) FROM guardian_notifications) AS notifications,"
            " pg_total_relation_size('guardian_alert_changes')"
            " + pg_total_relation_size('guardian_notifications') AS alert_bytes"
        )
        return dict(row)
    finally:
        await conn.close()


class Sampler:
    def __init__(self, bench: Settings, pids: dict[str, int | None], group: str) -> None:
        self.bench = bench
        self.pids = pids  # name -> pid: producer, worker-N, kafka, redis, postgres
        self.group = group
        self.redis = redis.Redis.from_url(bench.redis_url)
        self.samples: list[dict] = []
        self._last: tuple[float, tuple[float, float], dict] | None = None

    def take(self, at_s: float) -> dict:
        tree = _children()
        now, machine = time.monotonic(), _busy_cores()
        processes = {name: _process(pid, tree) for name, pid in self.pids.items()}
        memory = self.redis.info("memory")
        stores = asyncio.run(_stores(self.bench.postgres_dsn))
        if self._last is not None:  # the CPU each took since the last sample, in cores
            then, (busy, total), before = self._last
            for name, figures in processes.items():
                if figures and before.get(name):
                    figures["cores"] = round((figures["tree_cpu_s"] - before[name]["tree_cpu_s"]) / (now - then), 2)
            machine_busy = round((machine[0] - busy) / (machine[1] - total) * (os.cpu_count() or 1), 2)
        else:
            machine_busy = None
        self._last = (now, machine, processes)
        sample = {
            "t_s": round(at_s, 1),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "machine_busy_cores": machine_busy,  # every process on the host, ours or not
            "fleet_lag_events": _lag(self.bench, self.group),
            "processes": processes,
            "redis_used_memory_mib": round(memory["used_memory"] / MIB, 2),
            "redis_used_memory_rss_mib": round(memory["used_memory_rss"] / MIB, 2),
            "redis_soak_keys": self.redis.dbsize(),
            "pg_events_mib": round(stores["events_bytes"] / MIB, 1),
            "alert_changes_rows": stores["alert_changes"],
            "notifications_rows": stores["notifications"],
            "alert_tables_mib": round(stores["alert_bytes"] / MIB, 2),
        }
        self.samples.append(sample)
        return sample


# -- emit -> Redis ---------------------------------------------------------------------------------
class LatencyProbe:
    """Reads the producer's lines; a poller notes when each sampled event shows in the hot view."""

    def __init__(self, bench: Settings, producer_id: str, process: subprocess.Popen[str]) -> None:
        self.producer_id = producer_id
        self.process = process
        self.client = redis.Redis.from_url(bench.redis_url)
        self.pending: dict[str, deque[tuple[int, float]]] = defaultdict(deque)
        self.lock = threading.Lock()
        self.measured: list[tuple[float, float]] = []  # (emitted at, ms)
        self.lines: dict[str, list[str]] = {}  # the last W/R/D line's fields
        self.breakers = 0
        self.ready = threading.Event()
        self.started = threading.Event()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._reader.start()
        self._poller.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            kind, *fields = line.split()
            if kind == "S":
                with self.lock:
                    self.pending[fields[0]].append((int(fields[1]), float(fields[2])))
            elif kind == "B":
                self.breakers += 1
            else:
                self.lines[kind] = fields
                {"W": self.ready, "R": self.started, "D": self.done}[kind].set()
        self.done.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                keys = [key for key, samples in self.pending.items() if samples]
            if keys:
                pipe = self.client.pipeline(transaction=False)
                for key in keys:
                    pipe.hget(key, self.producer_id)
                values = pipe.execute()
                now = time.monotonic()
                with self.lock:
                    for key, value in zip(keys, values, strict=True):
                        samples = self.pending[key]
                        while value is not None and samples and int(value) >= samples[0][0]:
                            sent = samples.popleft()[1]
                            self.measured.append((sent, (now - sent) * 1000))
            time.sleep(POLL_INTERVAL_S)

    def unseen(self) -> int:
        with self.lock:
            return sum(len(samples) for samples in self.pending.values())

    def stop(self) -> None:
        self._stop.set()
        self._poller.join(timeout=10)


def _windows(measured: list[tuple[float, float]], began: float, window_s: float, count: int) -> list[dict]:
    by_window: dict[int, list[float]] = defaultdict(list)
    for sent, ms in measured:
        if sent >= began:
            by_window[min(int((sent - began) // window_s), count - 1)].append(ms)
    return [{"from_s": w * window_s, "p50_ms": _percentile(by_window[w], 0.5),
             "p99_ms": _percentile(by_window[w], 0.99),
             "max_ms": round(max(by_window[w]), 1) if by_window[w] else None, "samples": len(by_window[w])}
            for w in range(count)]  # fmt: skip


# -- verify ----------------------------------------------------------------------------------------
def _verify(env: dict[str, str], since_s: float) -> dict:
    began = time.monotonic()
    out = subprocess.run([GUARDIAN, "verify", "--since", f"{int(since_s)}s", "--settle", "2s", "--json"],
                         env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    try:
        report = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "exit": out.returncode, "error": out.stderr[-400:]}
    return {"ok": report["ok"], "exit": out.returncode, "events": report["events"],
            "rows_checked": report["rows_checked"], "keys_checked": report["keys_checked"],
            "mismatches": {k: v for k, v in report["mismatches"].items() if v},
            "verify_s": report["seconds"], "wall_s": round(time.monotonic() - began, 1)}  # fmt: skip


def _fleet_verifications(fleet: Fleet, at_s: float, seen: list[dict]) -> None:
    """Notes each periodic verification the fleet finished since the last look (from the workers' metrics)."""
    for index, (worker, port) in enumerate(fleet.workers):
        if worker.poll() is not None:
            continue
        try:
            text = fleet.metrics(index)
        except httpx.HTTPError:
            continue
        values = {}
        for line in text.splitlines():
            if line.startswith("guardian_consistency_") and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        finished = values.get("guardian_consistency_last_run_timestamp_seconds", 0.0)
        if not finished or any(v["worker"] == port and v["finished"] == finished for v in seen):
            continue
        runs = {o: int(values.get(f'guardian_consistency_runs_total{{outcome="{o}"}}', 0))
                for o in ("ok", "mismatch", "failed")}  # fmt: skip
        before = [v for v in seen if v["worker"] == port]
        previous = before[-1]["runs"] if before else {o: 0 for o in runs}
        outcome = next((o for o in ("failed", "mismatch", "ok") if runs[o] > previous[o]), "ok")
        seen.append({"t_s": round(at_s), "worker": port, "finished": finished, "outcome": outcome, "runs": runs,
                     "events": int(values.get("guardian_consistency_events_verified", 0)),
                     "seconds": round(values.get("guardian_consistency_duration_seconds", 0.0), 1)})  # fmt: skip
        click.echo(f"  the fleet's verification (worker {index + 1}) by {at_s:.0f} s: {outcome},"
                   f" {seen[-1]['events']:,} events in {seen[-1]['seconds']} s")  # fmt: skip


# -- the run ---------------------------------------------------------------------------------------
async def _final_counts(dsn: str, producer_id: str) -> dict:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT event_id) AS u FROM guardian_events"
                                  " WHERE producer_id = $1", producer_id)  # fmt: skip
        alerts = await conn.fetch("SELECT rule, status, count(*) AS n FROM guardian_alert_changes"
                                  " GROUP BY rule, status ORDER BY rule, status")  # fmt: skip
        return {"rows": row["n"], "unique": row["u"], "alerts": {f"{a['rule']} {a['status']}": a["n"] for a in alerts}}
    finally:
        await conn.close()


def _growth(samples: list[dict], baseline_at_s: float) -> dict:
    """Per guardian process: RSS at the baseline and at the end, each the median of 3 samples, the peak
    after the baseline, growth %. Medians, because a worker's RSS follows its batches: in a 2-minute run
    the last sample came with the backlog at ~9.5k events and read 122 MiB against 103-108 before it
    (a batch's decoded events: a working set, not growth), which alone failed a ~100 MiB worker."""
    out = {}
    names = [n for n in samples[0]["processes"] if n == "producer" or n.startswith("worker")]
    base_index = next(i for i, s in enumerate(samples) if s["t_s"] >= baseline_at_s - 1)
    for name in names:
        series = [s["processes"][name]["rss_mib"] for s in samples if s["processes"].get(name)]
        after = [s["processes"][name]["rss_mib"] for s in samples[base_index:] if s["processes"].get(name)]
        if len(after) < 4:
            out[name] = {"pass": False, "why": "the process was gone"}
            continue
        baseline, last = _percentile(after[:3], 0.5), _percentile(after[-3:], 0.5)
        growth = (last / baseline - 1) * 100
        out[name] = {"first_mib": series[0], "baseline_mib": baseline, "last_mib": last, "peak_mib": max(after),
                     "growth_pct": round(growth, 1), "pass": growth < RSS_BAR_PCT}  # fmt: skip
    return out


def _wait_for_the_whole_fleet(bench: Settings, fleet: Fleet, workdir: Path) -> None:
    """Until every worker holds events partitions in a stable group: a worker joining later would rebalance
    the group (a pause in consumption) inside the measured run."""
    admin = AdminClient(client_config(bench))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        group = admin.describe_consumer_groups([fleet.group])[fleet.group].result(timeout=10)
        holding = [m for m in group.members if any(tp.topic == bench.events_topic
                                                   for tp in m.assignment.topic_partitions)]  # fmt: skip
        if group.state == ConsumerGroupState.STABLE and len(holding) == len(fleet.workers):
            return
        time.sleep(0.5)
    raise click.ClickException(f"the {len(fleet.workers)} workers never shared the partitions; see {workdir}")


def _emit_wait(probe: LatencyProbe, producer: subprocess.Popen[str], seconds: float) -> None:
    if not probe.started.wait(seconds):
        producer.kill()
        raise click.ClickException("the soak producer did not start its clock")


def run_soak_bench(settings: Settings, minutes: float, rate: int = 5000, workers: int = 2) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /metrics scrape otherwise
    p = plan(minutes)
    result: dict = {"machine": describe_machine(), "minutes": minutes, "rate_events_per_s": rate, "workers": workers,
                    "lead_in_s": LEAD_IN_S, **{k: v for k, v in p.items() if k != "seconds"}}  # fmt: skip
    wall = time.monotonic()
    with isolated(settings, "soak", redis_db_env="GUARDIAN_SOAK_REDIS_DB", redis_db=6) as bench:
        click.echo(f"soak: {minutes:g} min at {rate} events/s, {workers} worker(s), database"
                   f" {bench.postgres_dsn.rsplit('/', 1)[1]}, Redis {bench.redis_url};"
                   f" sampling every {p['sample_s']:.0f} s")  # fmt: skip
        result.update(_with_fleet(bench, p, rate, workers))
    result["wall_clock_s"] = round(time.monotonic() - wall, 1)
    _print_table(result)
    return result


def _with_fleet(bench: Settings, p: dict, rate: int, workers: int) -> dict:
    producer_id = f"soak-{bench.events_topic.rsplit('.', 1)[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fleet = Fleet(bench, workdir, "30")
        try:
            # The fleet verifies itself (stream_processors/consistency/watch.py): the owner of partition 0 runs
            # `guardian verify` every verify_every_s over the last 1.5x that, niced, killed if it overruns.
            fleet.env.update({"GUARDIAN_VERIFY_INTERVAL_S": f"{p['verify_every_s']:g}",
                              "GUARDIAN_VERIFY_WINDOW_S": f"{p['verify_every_s'] * 1.5:g}",
                              "GUARDIAN_POSTGRES_DSN": bench.postgres_dsn,
                              "GUARDIAN_POSTGRES_ADMIN_DSN": bench.postgres_admin_dsn})  # fmt: skip
            cli_env = {**fleet.env, "GUARDIAN_WORKER_GROUP": fleet.group}
            for _ in range(workers):
                fleet.start()
            producer = subprocess.Popen(
                [sys.executable, "-m", "bench.soak_producer", bench.events_topic, producer_id, str(workdir / "spool"),
                 str(rate), str(LEAD_IN_S + p["seconds"]), str(SAMPLE_EVERY)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(workdir / "producer.log", "w"),  # noqa: SIM115
                text=True, cwd=REPO_ROOT, env=fleet.env,
            )  # fmt: skip
            try:
                return _run(bench, p, fleet, producer, producer_id, cli_env, workdir)
            finally:
                if producer.poll() is None:
                    producer.kill()
                fleet.stop()
        finally:  # the fleet's own topics (Faust's table changelogs) are named after its group
            admin = AdminClient(client_config(bench))
            admin.delete_topics([t for t in admin.list_topics(timeout=10).topics if fleet.group in t])


def _run(bench: Settings, p: dict, fleet: Fleet, producer: subprocess.Popen[str], producer_id: str,
         cli_env: dict[str, str], workdir: Path) -> dict:  # fmt: skip
    probe = LatencyProbe(bench, producer_id, producer)
    if not probe.ready.wait(120):
        raise click.ClickException(f"the soak producer never got its warm-up out; see {workdir / 'producer.log'}")
    # The clock starts once the warm-up is stored: the fleet has joined and both stores answer.
    deadline = time.monotonic() + 120
    while asyncio.run(_final_counts(bench.postgres_dsn, producer_id))["unique"] < 200:
        if time.monotonic() > deadline or any(w.poll() is not None for w, _ in fleet.workers):
            raise click.ClickException(f"the fleet did not store the warm-up; see {workdir}/worker-*.log")
        time.sleep(0.2)
    _wait_for_the_whole_fleet(bench, fleet, workdir)
    assert producer.stdin is not None
    producer.stdin.write("go\n")
    producer.stdin.flush()
    _emit_wait(probe, producer, 30)
    began = float(probe.lines["R"][0]) + LEAD_IN_S  # soak time 0: after the lead-in
    pids: dict[str, int | None] = {"producer": producer.pid}
    pids.update({f"worker-{i + 1}": w.pid for i, (w, _) in enumerate(fleet.workers)})
    pids.update(_stack_pids(bench))
    sampler = Sampler(bench, pids, fleet.group)
    verifies: list[dict] = []  # each periodic verification the fleet finished, as its metrics tell
    # a sample every sample_s from soak time 0, and the last one a second before the load ends
    sample_at = deque([k * p["sample_s"] for k in range(int(p["seconds"] // p["sample_s"]))] + [p["seconds"] - 1])
    while not probe.done.is_set():
        now = time.monotonic()
        if sample_at and now >= began + sample_at[0]:
            sample_at.popleft()
            s = sampler.take(now - began)
            _fleet_verifications(fleet, now - began, verifies)
            rss = " ".join(f"{n}={v['rss_mib']:.0f}" for n, v in s["processes"].items() if v)
            click.echo(f"  t={s['t_s']:>6.0f}s load={s['load_avg'][0]:.2f} busy={s['machine_busy_cores']}"
                       f" lag={s['fleet_lag_events']} RSS MiB {rss};"
                       f" redis_used={s['redis_used_memory_mib']:.0f} pg_events={s['pg_events_mib']:.0f}"
                       f" alerts={s['alert_changes_rows']}")  # fmt: skip
        if producer.poll() is not None and not probe.done.is_set():
            time.sleep(1)
            if not probe.done.is_set():
                raise click.ClickException(f"the soak producer exited ({producer.returncode}): {workdir}")
        time.sleep(0.2)
    emitted, unflushed, spooled, opens, closes = (int(x) for x in probe.lines["D"])
    producer.wait(timeout=60)
    # Everything emitted is stored, then the whole run is verified once more. A fleet that fell behind
    # catches up first: the wait ends when the rows stop growing for 120 s, not at a fixed deadline (the
    # first 30-minute run counted 120 s after the load, with 116,700 events still in the fleet's backlog).
    load_ended = time.monotonic()
    counts, progress_at, last_unique = {}, time.monotonic(), -1
    while time.monotonic() - progress_at < 120:
        counts = asyncio.run(_final_counts(bench.postgres_dsn, producer_id))
        if counts["unique"] >= emitted:
            break
        if counts["unique"] > last_unique:
            progress_at, last_unique = time.monotonic(), counts["unique"]
        time.sleep(1)
    catch_up_s = round(time.monotonic() - load_ended, 1)
    click.echo(f"  everything stored {catch_up_s} s after the load ended")
    time.sleep(1)  # the last breaker's alert change reaches the archive
    counts = asyncio.run(_final_counts(bench.postgres_dsn, producer_id))
    _fleet_verifications(fleet, time.monotonic() - began, verifies)
    final = _verify(cli_env, time.monotonic() - began + LEAD_IN_S + 120)
    click.echo(f"  final verify over the whole run: ok={final['ok']} events={final.get('events')}")
    time.sleep(0.5)
    probe.stop()
    window_count = max(1, round(p["seconds"] / p["window_s"]))
    windows = _windows(probe.measured, began, p["window_s"], window_count)
    samples = sampler.samples
    growth = _growth(samples, p["rss_baseline_at_s"])
    first, last = windows[0]["p99_ms"], windows[-1]["p99_ms"]
    ratio = round(last / first, 2) if first else None
    lost, duplicated = emitted - counts["unique"], counts["rows"] - counts["unique"]
    passes = {
        "rss_growth": all(g["pass"] for g in growth.values()),
        "p99_last_vs_first": ratio is not None and ratio <= P99_BAR_RATIO,
        "lost_0": lost == 0,
        "duplicated_0": duplicated == 0,
        "verify_final_ok": final["ok"],
        "periodic_verifications_ok": bool(verifies) and all(v["outcome"] == "ok" for v in verifies),
    }
    loads = [s["load_avg"][0] for s in samples]
    busy = [s["machine_busy_cores"] for s in samples if s["machine_busy_cores"] is not None]
    ours = [sum(v.get("cores", 0) for v in s["processes"].values() if v) for s in samples[1:]]
    return {
        "emitted": emitted, "stored_rows": counts["rows"], "unique_events": counts["unique"],
        "lost": lost, "duplicated": duplicated,
        "catch_up_after_load_s": catch_up_s, "producer_unflushed": unflushed, "producer_spooled": spooled,
        "breaker_opens": opens, "breaker_closes": closes, "alert_changes_by_rule": counts["alerts"],
        "emit_to_redis_windows": windows,
        "emit_to_redis_p99_ms_per_window": [w["p99_ms"] for w in windows],
        "emit_to_redis_samples_unseen": probe.unseen(),
        "p99_last_over_first": ratio,
        "rss_growth": growth,
        "verify_passes": verifies, "verify_final": final,
        "load_avg_1m": {"min": min(loads), "median": _percentile(loads, 0.5), "max": max(loads)},
        # CPU in use on the whole host and by the soak's processes (producer, workers, Kafka, Redis, PostgreSQL)
        "machine_busy_cores": {"median": _percentile(busy, 0.5), "max": max(busy, default=None)},
        "soak_processes_cores": {"median": _percentile(ours, 0.5), "max": max(ours, default=None)},
        "fleet_lag_events": {"max": max(s["fleet_lag_events"] for s in samples),
                             "last": samples[-1]["fleet_lag_events"]},
        "bars": {"rss_growth_pct_below": RSS_BAR_PCT, "rss_baseline_at_s": p["rss_baseline_at_s"],
                 "p99_last_over_first_at_most": P99_BAR_RATIO},
        "pass": passes, "passed": all(passes.values()),
        "samples": samples,
    }  # fmt: skip


def _print_table(r: dict) -> None:
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    s0, s1 = r["samples"][0], r["samples"][-1]
    click.echo(f"\nsoak {r['minutes']:g} min at {r['rate_events_per_s']} events/s, {r['workers']} worker(s):"
               f" {verdict(r['passed'])}  (load avg 1 min {r['load_avg_1m']['min']}-{r['load_avg_1m']['max']},"
               f" {r['machine']['cores']} cores)")  # fmt: skip
    base_at = r["bars"]["rss_baseline_at_s"]
    click.echo(f"{'RSS MiB':<12}{'start':>8}{f'at {base_at:.0f}s':>9}{'end':>8}{'peak':>8}{'growth':>9}  bar <10%")
    for name, g in r["rss_growth"].items():
        if "growth_pct" in g:
            click.echo(f"{name:<12}{g['first_mib']:>8.0f}{g['baseline_mib']:>9.0f}{g['last_mib']:>8.0f}"
                       f"{g['peak_mib']:>8.0f}{g['growth_pct']:>8.1f}%  {verdict(g['pass'])}")  # fmt: skip
    for name in ("kafka", "redis", "postgres"):  # PostgreSQL: PSS of the postmaster and its backends
        a, b = s0["processes"].get(name), s1["processes"].get(name)
        if a and b:
            key = "tree_pss_mib" if name == "postgres" else "rss_mib"
            growth = (b[key] / a[key] - 1) * 100
            click.echo(f"{name:<12}{a[key]:>8.0f}{'':>9}{b[key]:>8.0f}{'':>8}{growth:>8.1f}%  (no bar)")
    click.echo(f"host CPU busy {r['machine_busy_cores']['median']} of {r['machine']['cores']} cores (median; the soak's"
               f" own processes {r['soak_processes_cores']['median']}); fleet lag max {r['fleet_lag_events']['max']:,},"
               f" at the end {r['fleet_lag_events']['last']:,} events")  # fmt: skip
    p99 = " ".join(f"{v:g}" for v in r["emit_to_redis_p99_ms_per_window"])
    click.echo(f"emit->Redis p99 per {r['window_s'] / 60:g} min (ms): {p99}; last/first {r['p99_last_over_first']}"
               f" (bar <= {P99_BAR_RATIO})  {verdict(r['pass']['p99_last_vs_first'])}")  # fmt: skip
    click.echo(f"Redis used_memory {s0['redis_used_memory_mib']:.1f} -> {s1['redis_used_memory_mib']:.1f} MiB;"
               f" guardian_events {s0['pg_events_mib']:.0f} -> {s1['pg_events_mib']:.0f} MiB;"
               f" alert changes {s0['alert_changes_rows']} -> {s1['alert_changes_rows']},"
               f" notifications {s0['notifications_rows']} -> {s1['notifications_rows']} rows")  # fmt: skip
    ok = sum(v["outcome"] == "ok" for v in r["verify_passes"])
    click.echo(f"verify: {ok}/{len(r['verify_passes'])} of the fleet's periodic verifications ok"
               f" {verdict(r['pass']['periodic_verifications_ok'])}; final over the whole run"
               f" ok={r['verify_final']['ok']} {verdict(r['pass']['verify_final_ok'])}")  # fmt: skip
    click.echo(f"events: {r['emitted']:,} emitted, lost {r['lost']}, duplicated {r['duplicated']};"
               f" breakers opened/closed {r['breaker_opens']}/{r['breaker_closes']}"
               f"  {verdict(r['pass']['lost_0'] and r['pass']['duplicated_0'])}")  # fmt: skip
