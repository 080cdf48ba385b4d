"""Fault matrix: one run of each fault at 5,000 events/s, side by side, on the local stack.

Each row has a fleet of three workers of its own (own topics, consumer group, Redis database) and a
producer process (bench/fault_producer.py) emitting at the rate through its spool, one circuit breaker
OPEN per 100 events on a symbol of its own (closed again 50 events later). After a lead-in at the rate
the fault is produced; from its end the bench waits until the fleet has caught up, stops the producer
(a clean close: everything it holds is delivered), waits for lag 0, then counts:

- `lost`: events the producer took and acknowledged or spooled (emitted - dropped by a full spool -
  held only in librdkafka's memory by a producer killed with -9) that have no row in PostgreSQL;
  counted per producer id over its sequences. Events held in memory by a killed producer are counted
  apart (`lost_unspooled_at_kill`), as are events refused by a full spool disk (`dropped_spool_full`).
- `duplicated_rows`: rows beyond one per event id.
- `hot_view_wrong_keys`: `guardian verify`'s PostgreSQL<->Redis findings (stale, corrupt, missing keys)
  over the row's window, after the fleet settled.
- `alerts_missed` / `alerts_doubled`: breaker OPENs stored in PostgreSQL against FIRING records on the
  alerts topic (each OPEN is on its own symbol: one FIRING each); the archive's guardian_alert_changes
  is counted the same way beside it.
- `recovered_s`: from the fault's end (the service back, the last kill) until the fleet is caught up:
  the group's committed lag 0 and every event taken stored (and, after a Redis fault, the hot view's
  status `ready`). The producer emits on for TAIL_S after the fault's end, then closes. On a machine
  where the fleet is slower than the rate, this includes working off the backlog that built during the
  lead-in: the `baseline_no_fault` row measures exactly that, with no fault.

The bench stops and kills the local stack's own services (by the pids `guardian stack` keeps) and runs
FLUSHALL on its Redis: run it on a stack of its own, never on one other work depends on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import click
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.machine import describe_machine
from bench.recovery import Fleet
from guardian.kafka_config import client_config
from guardian.kafka_lookup import admin_client, committed, members, partitions_of, probe, watermarks
from guardian.producers.producer import DRIFT
from guardian.schemas.checkpoint import TOPIC_CONFIG
from guardian.schemas.codec import EventCodec, load_alert_schema
from guardian.settings import REPO_ROOT, Settings
from guardian.sinks.redis_hot_view import READY, STATUS_KEY
from guardian.stack.errors import StackError
from guardian.stack.manager import Stack
from guardian.stack.process import wait_until

RATE = 5000
# The bench's rows: its producers', and the fuzzed records that decoded as storable events (a bit flip in a
# string of a valid event is still a valid event; the flip may have hit any field, so three ways to know them).
CLEANUP = (
    "DELETE FROM guardian_events WHERE producer_id LIKE 'bench-f%' OR symbol LIKE 'BENCH-F%' OR host LIKE 'fu%'"
    " OR producer_id LIKE '%-fuzz-%' OR producer_id LIKE '%template%'"
)
SEQ_MASK = 0xFFFFFFFF  # a sequence's count within its producer run (the high bits are the epoch)
FUZZED = 10_000
SYMBOL_PREFIX = "BENCH-F"  # every symbol the bench's producers emit (bench/fault_producer.py) starts so
SPOOL_DISK_BYTES = 4 * 1024 * 1024  # the tmpfs the disk-full row's spool lives on
RECOVERY_TIMEOUT_S = 900.0
TAIL_S = 5.0  # the producer emits on for this long after the fault's end
BRIEF = ("lost", "duplicated_rows", "hot_view_wrong_keys", "alerts_missed", "alerts_doubled", "recovered_s", "error")
ROWS = (
    "baseline_no_fault",
    "worker_kill9_x10",
    "broker_stopped",
    "broker_kill9",
    "redis_restarted",
    "redis_flushall",
    "postgres_stopped",
    "producer_kill9_broker_down",
    "fuzzed_records",
    "spool_disk_full",
)
HOW = {
    "baseline_no_fault": "no fault: the same producer, fleet and counting, {fault:.0f} s of nothing; its recovered_s "
    "is what the fleet needs on this machine to work off the backlog of the same load, the floor of every other row's",
    "worker_kill9_x10": "SIGKILL of one of the three workers every {every:.0f} s, {kills} times; each restarted 1 s "
    "after its kill",
    "broker_stopped": "`guardian stack stop kafka` (SIGTERM, controlled shutdown), {fault:.0f} s down, then "
    "`guardian stack start kafka`",
    "broker_kill9": "SIGKILL of the broker's pid (from the stack's pid file), then started again at once "
    "(KRaft log recovery)",
    "redis_restarted": "`guardian stack stop redis` then `start` (Redis reloads its append-only file)",
    "redis_flushall": "FLUSHALL on the stack's Redis: the hot view, its status and the alert state are gone; "
    "a worker notices and rebuilds the view from the newest checkpoint + the Kafka tail",
    "postgres_stopped": "`guardian stack stop postgres` (fast shutdown), {fault:.0f} s down, then started",
    "producer_kill9_broker_down": "broker stopped; the producer spools for {fault:.0f} s; it is paused (so its "
    "counters are exact), killed with SIGKILL, a new producer process (another producer id, the same spool "
    "root) starts and adopts the dead one's spool; 2 s later the broker starts",
    "fuzzed_records": "{fuzzed} records from a plain confluent-kafka producer into the events topic over "
    "{fault:.0f} s, beside the producer: random bytes, a valid Avro header with random or truncated bodies, "
    "empty values, bit-flipped copies of a valid event; expected in the DLQ",
    "spool_disk_full": "the producer's spool root on a {disk_mib} MiB tmpfs; broker stopped {fault:.0f} s so the "
    "spool fills it (ENOSPC), then started",
}
NOT_PRODUCED = {
    "network_partition_between_hosts": "not produced: every process here runs on one host over loopback, so "
    "there is no link between hosts to cut. What would test it: brokers, workers and the producer in "
    "separate network namespaces or containers (deploy/compose) with `tc netem loss 100%` or iptables DROP "
    "between them (or Toxiproxy in front of Kafka), for the producer<->broker, worker<->broker and "
    "worker<->stores links one at a time; the same counters as above.",
    "disk_failure_of_broker_or_postgres": "not produced: the services' data directories share the root disk "
    "with other work; a dm-flakey / dm-error device under a service's data directory would test it.",
}


@dataclass
class Plan:
    fault_s: float
    lead_s: float
    kills: int
    kill_every_s: float
    fuzzed: int
    rate: int


def _plan(quick: bool, fault_s: float | None, rate: int) -> Plan:
    if quick:
        return Plan(fault_s or 15.0, 5.0, 3, 5.0, FUZZED, rate)
    return Plan(fault_s or 60.0, 10.0, 10, 20.0, FUZZED, rate)


class ProducerProc:
    """bench/fault_producer.py in a child process; its status lines are kept as they arrive."""

    def __init__(self, producer_id: str, topic: str, rate: int, prefix: str, env: dict, log: Path) -> None:
        self.producer_id = producer_id
        self.lines: list[dict] = []
        self._log = open(log, "ab")  # noqa: SIM115 - the child's stderr, closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.fault_producer", producer_id, topic, str(rate), prefix],
            stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=REPO_ROOT, text=True,
        )  # fmt: skip
        self.killed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def last(self, key: str | None = None) -> dict:
        for line in reversed(self.lines):
            if key is None or key in line:
                return line
        return {}

    def pause(self) -> dict:
        self.process.send_signal(signal.SIGUSR1)
        if not wait_until(lambda: bool(self.last("paused")), 30):
            raise click.ClickException(f"producer {self.producer_id} did not pause")
        return self.last("paused")

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self.killed = True

    def stop(self) -> dict:
        """SIGTERM: flush, close; returns its last counters (the line before `closed`)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=360)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        self._log.close()
        return self.last("emitted")


class Row:
    """One fault's fleet, producers, topics and counts."""

    def __init__(self, name: str, base: Settings, redis_url: str, workdir: Path, plan: Plan) -> None:
        self.name = name
        self.plan = plan
        self.suffix = uuid.uuid4().hex[:6]
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.topics = {kind: f"bench.faults.{kind}.{self.suffix}" for kind in ("events", "alerts", "dlq", "ckpt")}
        self.settings = base.model_copy(
            update={
                "events_topic": self.topics["events"], "alerts_topic": self.topics["alerts"],
                "dlq_topic": self.topics["dlq"], "checkpoints_topic": self.topics["ckpt"], "redis_url": redis_url,
            }
        )  # fmt: skip
        self.prefix = f"{SYMBOL_PREFIX}B{self.suffix}-"  # breaker symbols
        self.spool_root = self.workdir / "spools"
        self.producers: list[ProducerProc] = []
        self.fleet = Fleet(self.settings, self.workdir, "5")  # checkpoints every 5 s: FLUSHALL rebuilds from one
        self.fleet.group = f"bench-faults-{self.suffix}"
        self.fleet.env.update(
            GUARDIAN_WORKER_GROUP=self.fleet.group,
            GUARDIAN_DLQ_TOPIC=self.topics["dlq"],
            # 2 s sessions, as docs/recovery.md advises for a fast takeover (the local broker allows them)
            GUARDIAN_WORKER_SESSION_TIMEOUT_MS="2000",
            GUARDIAN_WORKER_HEARTBEAT_INTERVAL_MS="500",
        )
        self.started_at = datetime.now(UTC)
        self.fault_end_wall = 0.0
        self.fault_end = 0.0
        self.notes: dict = {}
        self.unspooled: dict[str, int] = {}  # producer id -> events only in librdkafka's memory when killed
        self.lag_reader = LagReader(self.settings, self.fleet.group)

    @property
    def group_settings(self) -> Settings:
        return self.settings.model_copy(update={"worker_group": self.fleet.group})

    def producer_env(self) -> dict:
        return {
            **os.environ,
            "GUARDIAN_SPOOL_DIR": str(self.spool_root),
            "GUARDIAN_LOG_LEVEL": "WARNING",
        }

    def start_producer(self) -> ProducerProc:
        producer_id = f"bench-faults-{self.name[:12]}-{uuid.uuid4().hex[:6]}"
        index = len(self.producers)
        proc = ProducerProc(producer_id, self.topics["events"], self.plan.rate, f"{self.prefix}{index}-",
                            self.producer_env(), self.workdir / f"producer-{index}.log")  # fmt: skip
        self.producers.append(proc)
        return proc

    def end_fault(self) -> None:
        self.fault_end = time.monotonic()
        self.fault_end_wall = time.time()


# -- stores --------------------------------------------------------------------------------------
def _pg(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def _stored_upto(row: Row, producer_id: str, upto: int) -> int:
    """Distinct sequences of `producer_id` with a count <= `upto` in PostgreSQL."""
    rows = _pg(row.settings.postgres_dsn,
               "SELECT count(DISTINCT sequence) AS n FROM guardian_events WHERE event_time >= $1"
               " AND producer_id = $2 AND (sequence & 4294967295) <= $3",
               row.started_at - timedelta(minutes=1), producer_id, upto)  # fmt: skip
    return int(rows[0]["n"])


class LagReader:
    """The group's committed lag on the row's topic, from one long-lived probe consumer and admin client
    (a pair made per look crashed the bench process once in librdkafka's teardown)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings, self.group = settings, group
        self.consumer, self.trap = probe(settings, "faults-lag")
        self.admin, _ = admin_client(settings)
        self.partitions: list[int] = []

    def lag(self) -> int:
        topic = self.settings.events_topic
        try:
            if not self.partitions:
                self.partitions = partitions_of(self.consumer, self.trap, self.settings, topic)
            done = committed(self.admin, self.group, topic, timeout=5)
            return sum(watermarks(self.consumer, topic, p, timeout=5)[1] - done.get(p, 0) for p in self.partitions)
        except Exception:
            # After a broker restart these clients kept failing (the first full run waited out its
            # timeout with every row stored): new ones for the next look.
            self.close()
            self.consumer, self.trap = probe(self.settings, "faults-lag")
            self.admin, _ = admin_client(self.settings)
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


def _lag_or_none(row: Row) -> int | None:
    try:
        return row.lag_reader.lag()
    except Exception:  # the broker is down or restarting
        return None


# -- faults --------------------------------------------------------------------------------------
class Faults:
    def __init__(self, stack: Stack, plan: Plan) -> None:
        self.stack = stack
        self.plan = plan
        self.start_failures: list[str] = []

    def _quiet(self, line: str) -> None:
        click.echo(f"    {line.strip()}")

    def _start(self, service: str) -> float:
        """Start `service` again; returns the seconds it took. Tries up to 5 times: the brief's ports (49092 ...)
        lie in the kernel's ephemeral range, and a client reconnecting to a port nobody listens on can be
        given that very port as its source (a TCP self-connect), which then blocks the service's bind for
        a moment (seen twice in a run: `Address already in use` from the broker)."""
        began = time.monotonic()
        for attempt in range(1, 6):
            try:
                self.stack.up(report=self._quiet, only=service)
                break
            except StackError as exc:
                self.start_failures.append(f"{service} attempt {attempt}: {str(exc)[:200]}")
                if attempt == 5:
                    raise
                time.sleep(5)
        return round(time.monotonic() - began, 1)

    def _stop(self, service: str) -> None:
        self.stack.stop_one(service, self._quiet)

    def baseline_no_fault(self, row: Row) -> None:
        time.sleep(self.plan.fault_s)
        row.end_fault()

    def worker_kill9_x10(self, row: Row) -> None:
        kills = []
        for _ in range(self.plan.kills):
            time.sleep(self.plan.kill_every_s)
            alive = [w for w, _ in row.fleet.workers if w.poll() is None]
            victim = alive[0]
            victim.kill()
            victim.wait(timeout=30)
            kills.append(victim.pid)
            time.sleep(1.0)
            row.fleet.start()
        row.end_fault()
        row.notes["workers_killed"] = len(kills)

    def broker_stopped(self, row: Row) -> None:
        self._stop("kafka")
        time.sleep(self.plan.fault_s)
        row.notes["restart_s"] = self._start("kafka")
        row.end_fault()

    def broker_kill9(self, row: Row) -> None:
        kafka = self.stack.services["kafka"].process
        pid = kafka.pid()
        if pid is None:
            raise click.ClickException("the local broker is not running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: kafka.pid() is None, 30)
        row.notes["restart_s"] = self._start("kafka")
        row.end_fault()

    def redis_restarted(self, row: Row) -> None:
        self._stop("redis")
        row.notes["restart_s"] = self._start("redis")
        row.end_fault()

    def redis_flushall(self, row: Row) -> None:
        redis.Redis.from_url(row.settings.redis_url).flushall()
        row.end_fault()

    def postgres_stopped(self, row: Row) -> None:
        self._stop("postgres")
        time.sleep(self.plan.fault_s)
        row.notes["restart_s"] = self._start("postgres")
        row.end_fault()

    def producer_kill9_broker_down(self, row: Row) -> None:
        self._stop("kafka")
        time.sleep(self.plan.fault_s)
        first = row.producers[0]
        paused = first.pause()
        first.kill9()
        row.unspooled[first.producer_id] = int(paused["queue_depth"])
        row.notes["killed_producer"] = {k: paused[k] for k in ("emitted", "spooled", "spool_records", "queue_depth",
                                                                "delivered", "dropped")}  # fmt: skip
        row.start_producer()  # adopts the dead producer's spool (same GUARDIAN_SPOOL_DIR)
        time.sleep(2.0)
        row.notes["restart_s"] = self._start("kafka")
        row.end_fault()

    def fuzzed_records(self, row: Row) -> None:
        row.notes["fuzzed_sent"] = _send_fuzz(row, self.plan.fuzzed, self.plan.fault_s)
        row.end_fault()

    def spool_disk_full(self, row: Row) -> None:
        self._stop("kafka")
        time.sleep(self.plan.fault_s)
        row.notes["restart_s"] = self._start("kafka")
        row.end_fault()


def _send_fuzz(row: Row, count: int, seconds: float) -> int:
    codec = EventCodec()
    template = {
        "event_id": str(uuid.uuid4()), "producer_id": "bench-faults-fuzz-template", "sequence": 1, "host": "fuzz",
        "symbol": "BENCH-FZ", "detector": "DRIFT_MONITOR", "event_time": time.time_ns() // 1000,
        "severity": "INFO", "schema_version": 1,
        "payload": (DRIFT, {"metric": "m", "expected": 1.0, "observed": 2.0, "drift_score": 0.5,
                                   "window_seconds": 300}),
    }  # fmt: skip
    valid = codec.encode(template)
    header = valid[:10]
    rng = random.Random(17)

    def record(n: int) -> bytes:
        kind = n % 5
        if kind == 0:
            return rng.randbytes(rng.randint(1, 400))
        if kind == 1:
            return header + rng.randbytes(rng.randint(0, 300))
        if kind == 2:
            return valid[: rng.randint(0, len(valid) - 1)]
        if kind == 3:
            return b""
        flipped = bytearray(valid)
        for _ in range(rng.randint(3, 12)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)

    producer = Producer(client_config(row.settings, {"linger.ms": 5}))
    began = time.monotonic()
    for n in range(count):
        producer.produce(row.topics["events"], record(n), key=f"BENCH-FZ{n % 50}".encode())
        producer.poll(0)
        delay = began + (n + 1) * seconds / count - time.monotonic()
        if delay > 0.001:
            time.sleep(delay)
    left = producer.flush(60)
    return count - left


# -- counting ------------------------------------------------------------------------------------
def _topic_records(settings: Settings, topic: str) -> list:
    consumer = Consumer(client_config(settings, {"group.id": f"bench-faults-read-{uuid.uuid4().hex[:6]}",
                                                  "enable.auto.commit": False, "log_level": 0}))  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out, seen = [], Counter()
        deadline, quiet = time.monotonic() + 120, 0
        # Until every partition's end, or 5 s with nothing new: a transactional producer's last control
        # record is an offset no message has, so the end may never be `seen` (a run waited 120 s per topic).
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline and quiet < 5:
            messages = consumer.consume(1000, timeout=1.0)
            quiet = 0 if messages else quiet + 1
            for message in messages:
                if message.error() is None:
                    out.append(message)
                    seen[message.partition()] = message.offset() + 1
        return out
    finally:
        consumer.close()


def _alerts(row: Row, opens: set[str]) -> dict:
    codec = EventCodec(load_alert_schema())
    firing: Counter[str] = Counter()
    for message in _topic_records(row.settings, row.topics["alerts"]):
        alert = codec.decode(message.value())
        if alert["status"] == "FIRING" and (alert["symbol"] or "").startswith(row.prefix) and not alert.get("repeat"):
            firing[alert["symbol"]] += 1
    archived: Counter[str] = Counter()
    for record in _pg(row.settings.postgres_admin_dsn,
                      "SELECT symbol, count(*) AS n FROM guardian_alert_changes WHERE status = 'FIRING'"
                      " AND NOT repeat AND symbol LIKE $1 GROUP BY symbol", row.prefix + "%"):  # fmt: skip
        archived[record["symbol"]] = record["n"]
    return {
        "alerts_expected": len(opens),
        "alerts_missed": sum(1 for s in opens if firing[s] == 0),
        "alerts_doubled": sum(n - 1 for n in firing.values() if n > 1),
        "alerts_firing_records": sum(firing.values()),
        "alert_changes_missed": sum(1 for s in opens if archived[s] == 0),
        "alert_changes_doubled": sum(n - 1 for n in archived.values() if n > 1),
    }


def _gaps(sequences: list[int], upto: int) -> list[list[int]]:
    """Spans [first, last] of counts in 1..upto with no row."""
    have = sorted(set(sequences))
    spans, expect = [], 1
    for n in [*have, upto + 1]:
        if n > expect:
            spans.append([expect, min(n - 1, upto)])
        expect = max(expect, n + 1)
        if expect > upto:
            break
    return spans


def _count(row: Row, finals: dict[str, dict]) -> dict:
    since = row.started_at - timedelta(minutes=1)
    ids = [p.producer_id for p in row.producers]
    dsn = row.settings.postgres_dsn
    lost = unspooled_lost = dropped = accepted = emitted_total = duplicated = 0
    per_producer = {}
    for proc in row.producers:
        final = finals[proc.producer_id]
        emitted, drop = int(final.get("emitted", 0)), int(final.get("dropped", 0))
        held = row.unspooled.get(proc.producer_id, 0)
        records = _pg(dsn, "SELECT (sequence & 4294967295) AS n, count(*) AS c FROM guardian_events"
                           " WHERE event_time >= $1 AND producer_id = $2 GROUP BY event_id, sequence",
                      since, proc.producer_id)  # fmt: skip
        unique = len(records)
        rows = sum(r["c"] for r in records)
        missing = emitted - unique
        took = emitted - drop - held  # acknowledged or spooled
        p_lost = max(0, missing - drop - held)
        lost += p_lost
        unspooled_lost += min(held, max(0, missing - drop))
        dropped += drop
        accepted += took
        emitted_total += emitted
        duplicated += rows - unique
        per_producer[proc.producer_id] = {
            "emitted": emitted, "dropped_spool_full": drop, "held_in_memory_at_kill": held, "stored_unique": unique,
            "rows": rows, "unflushed_at_close": final.get("unflushed"), "killed": proc.killed,
            "missing_spans": _gaps([r["n"] for r in records], emitted)[:20],
        }  # fmt: skip
    opens_query = (
        "SELECT DISTINCT symbol FROM guardian_events WHERE event_time >= $1 AND producer_id = ANY($2)"
        " AND symbol LIKE $3 AND payload->>'to_state' = 'OPEN'"
    )
    opens = {r["symbol"] for r in _pg(dsn, opens_query, since, ids, row.prefix + "%")}
    return {
        "events_emitted": emitted_total, "events_accepted": accepted, "lost": lost,
        "lost_unspooled_at_kill": unspooled_lost, "dropped_spool_full": dropped, "duplicated_rows": duplicated,
        "producers": per_producer, **_alerts(row, opens),
    }  # fmt: skip


def _verify(row: Row) -> dict:
    from guardian.stream_processors.consistency.verify import verify

    since_s = (datetime.now(UTC) - row.started_at).total_seconds() + 60
    report = asyncio.run(verify(row.group_settings, since_s, 10.0))
    found = report.mismatches()
    # PostgreSQL rows carry a partition and an offset, not a topic: rows other writers stored in the window
    # (a test run's topics) at offsets this row's topic also has are held against this row's Redis
    # database. Only keys of the bench's own symbols are the row's.
    own = [f for f in report.keys if f.key.split(":")[2].startswith(SYMBOL_PREFIX)]
    return {
        "hot_view_wrong_keys": len(own),
        "hot_view_wrong_keys_of_other_writers": len(report.keys) - len(own),
        "verify": {"ok": report.ok, "mismatches": found, "keys_checked": report.keys_checked,
                   "rows_checked": report.rows_checked, "dead_lettered": report.dead_lettered,
                   "keys": [f.describe() for f in report.keys[:10]]},
    }  # fmt: skip


def _dlq_count(row: Row) -> int:
    return len(_topic_records(row.settings, row.topics["dlq"]))


# -- one row -------------------------------------------------------------------------------------
def _run_row(name: str, base: Settings, redis_url: str, workdir: Path, stack: Stack, plan: Plan) -> dict:
    row = Row(name, base, redis_url, workdir, plan)
    admin = AdminClient(client_config(base, {"log_level": 0}))
    wanted = [NewTopic(row.topics["events"], base.events_partitions, 1), NewTopic(row.topics["alerts"], 3, 1),
              NewTopic(row.topics["dlq"], 3, 1), NewTopic(row.topics["ckpt"], 1, 1, config=TOPIC_CONFIG)]  # fmt: skip
    for future in admin.create_topics(wanted).values():
        future.result(timeout=30)
    mounted = False
    if name == "spool_disk_full":
        row.spool_root.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SPOOL_DISK_BYTES}", "tmpfs", str(row.spool_root)],
                       check=True)  # fmt: skip
        mounted = True
    faults = Faults(stack, plan)
    result: dict = {"fault": name, "how": HOW[name].format(every=plan.kill_every_s, kills=plan.kills,
                                                           fault=plan.fault_s, fuzzed=plan.fuzzed,
                                                           disk_mib=SPOOL_DISK_BYTES // 2**20)}  # fmt: skip
    try:
        for _ in range(3):
            row.fleet.start()
        began = time.monotonic()

        def joined() -> bool:
            try:
                return len(members(row.lag_reader.admin, row.fleet.group)) >= 3
            except Exception:  # the group does not exist yet
                return False

        # The producer starts once the three workers are in the group: no start-up backlog to work off.
        if not wait_until(joined, timeout=180, interval=1.0):
            raise click.ClickException(f"{name}: the three workers did not join their group within 180 s")
        result["fleet_joined_s"] = round(time.monotonic() - began, 1)
        row.start_producer()
        time.sleep(plan.lead_s)
        click.echo(f"  {name}: fault (lag {_lag_or_none(row)})")
        fault_began = time.monotonic()
        getattr(faults, name)(row)
        result["fault_s"] = round(row.fault_end - fault_began, 1)
        # The producer goes on for TAIL_S after the fault's end, then closes (everything it holds is delivered):
        # from the fault's end, the fleet is caught up when its lag is 0 and every event taken has its row.
        time.sleep(TAIL_S)
        finals = {}
        for proc in row.producers:
            finals[proc.producer_id] = proc.last("paused") if proc.killed else proc.stop()
        result["producer_closed_after_fault_s"] = round(time.monotonic() - row.fault_end, 1)
        # The rate the producer reached (on a busy host it gets less CPU than the asked rate needs).
        timed = [ln for proc in row.producers for ln in proc.lines if "emitted" in ln and not ln.get("paused")]
        if len(timed) > 1:
            span = max(ln["t"] for ln in timed) - min(ln["t"] for ln in timed)
            result["producer_rate_events_per_s"] = round(sum(int(f.get("emitted", 0)) for f in finals.values())
                                                         / max(span, 1e-3))  # fmt: skip
        wanted_total = sum(int(f.get("emitted", 0)) - int(f.get("dropped", 0)) for f in finals.values()) - sum(
            row.unspooled.values()
        )
        hot_view = name.startswith("redis")
        shown = [0.0]

        def caught_up() -> bool:
            lag = _lag_or_none(row)
            try:
                stored = sum(_stored_upto(row, p, 10**9) for p in finals)
            except (OSError, asyncpg.PostgresError):
                stored = -1
            if time.monotonic() - shown[0] >= 30:
                shown[0] = time.monotonic()
                click.echo(f"    {time.monotonic() - row.fault_end:.0f} s after the fault: lag {lag},"
                           f" rows {stored} of {wanted_total}")  # fmt: skip
            if lag != 0 or stored < wanted_total:
                return False
            if hot_view:
                status = redis.Redis.from_url(row.settings.redis_url, socket_timeout=2).hgetall(STATUS_KEY)
                return status.get(b"state", b"").decode() == READY
            return True

        recovered = wait_until(caught_up, RECOVERY_TIMEOUT_S, interval=1.0)
        result["recovered_s"] = round(time.monotonic() - row.fault_end, 1) if recovered else None
        result["final_lag"] = _lag_or_none(row)
        # Not settled: what is not stored yet may still come (a fleet far behind on a loaded machine); the
        # row says so rather than hiding it, and its `lost` counts those events.
        result["settled"] = bool(recovered)
        click.echo(f"  {name}: caught up {result['recovered_s']} s after the fault's end")
        time.sleep(3.0)  # the last alerts
        result.update(_count(row, finals))
        result.update(_verify(row))
        result["dead_lettered"] = _dlq_count(row)
        if name == "fuzzed_records":  # every fuzzed record is either dead-lettered or decoded as a storable event
            query = "SELECT count(*) AS n FROM guardian_events WHERE ingested_at >= $1 AND producer_id <> ALL($2)"
            others = _pg(row.settings.postgres_dsn, query, row.started_at, [p.producer_id for p in row.producers])
            result["fuzzed_stored_as_events"] = int(others[0]["n"])
        result["workers_crashed"] = sum(1 for w, _ in row.fleet.workers if w.poll() not in (None, -9))
        result.update(row.notes)
        if faults.start_failures:
            result["service_start_failures"] = faults.start_failures
    finally:
        for proc in row.producers:
            if proc.process.poll() is None:
                proc.stop()
        row.fleet.stop()
        row.lag_reader.close()
        if mounted:
            leftover = sum(1 for _ in row.spool_root.rglob("*.seg"))
            result["spool_segments_left"] = leftover
            subprocess.run(["umount", str(row.spool_root)], check=False)
        _cleanup(row, admin)
    return result


def _cleanup(row: Row, admin: AdminClient) -> None:
    try:
        _pg(row.settings.postgres_admin_dsn, CLEANUP)
        _pg(row.settings.postgres_admin_dsn, "DELETE FROM guardian_alert_changes WHERE symbol LIKE 'BENCH-%'")
    except (OSError, asyncpg.PostgresError) as exc:
        click.echo(f"  cleanup: {exc}")
    redis.Redis.from_url(row.settings.redis_url).flushdb()
    made = [t for t in admin.list_topics(timeout=10).topics if row.suffix in t]
    if made:
        admin.delete_topics(made)


# -- the run -------------------------------------------------------------------------------------
def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def print_table(rows: list[dict]) -> None:
    head = f"{'fault':<28}{'lost':>6}{'dup':>6}{'hv wrong':>10}{'missed':>8}{'doubled':>9}{'recovered s':>13}  other"
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        if "error" in r:
            click.echo(f"{r['fault']:<28}  ERROR: {r['error']}")
            continue
        other = []
        if r.get("lost_unspooled_at_kill"):
            other.append(f"{r['lost_unspooled_at_kill']} unspooled at kill lost")
        if r.get("dropped_spool_full"):
            other.append(f"{r['dropped_spool_full']} refused (disk full)")
        if r["fault"] == "fuzzed_records":
            other.append(
                f"{r.get('dead_lettered')} of {r.get('fuzzed_sent')} in DLQ,"
                f" {r.get('fuzzed_stored_as_events')} decoded as storable events"
            )
        if not r.get("settled", True):
            other.append(f"NOT SETTLED (lag {r.get('final_lag')}): unstored events counted as lost")
        rec = "-" if r.get("recovered_s") is None else f"{r['recovered_s']:.1f}"
        click.echo(f"{r['fault']:<28}{r['lost']:>6}{r['duplicated_rows']:>6}{r['hot_view_wrong_keys']:>10}"
                   f"{r['alerts_missed']:>8}{r['alerts_doubled']:>9}{rec:>13}  {', '.join(other)}")  # fmt: skip


def run_faults_bench(settings: Settings, quick: bool, fault_s: float | None, rate: int, only: tuple[str, ...]) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    plan = _plan(quick, fault_s, rate)
    stack = Stack(settings)
    missing = [name for name, service in stack.services.items() if service.process.pid() is None]
    if missing:
        raise click.ClickException(f"the fault bench needs the local stack's own services; not running: {missing}")
    if os.geteuid() != 0 and (not only or "spool_disk_full" in only):
        raise click.ClickException("the spool_disk_full row mounts a tmpfs: run as root, or leave it out (--only)")
    database = int(os.environ.get("GUARDIAN_BENCH_REDIS_DB", "6"))
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{database}"
    names = list(dict.fromkeys(only)) if only else list(ROWS)  # --only's order: the rows that matter most first
    result: dict = {
        "machine": describe_machine(),
        "load_average_before": _load(),
        "rate_events_per_s": plan.rate,
        "quick": quick,
        "plan": plan.__dict__,
        "workers": 3,
        "worker_session_timeout_ms": 2000,
        "checkpoint_interval_s": 5,
        "not_produced": NOT_PRODUCED,
        "rows": [],
    }
    click.echo(f"fault bench: {len(names)} faults at {plan.rate} events/s, 3 workers each, fault {plan.fault_s:.0f} s"
               f" (load average {result['load_average_before']})")  # fmt: skip

    # Rows a killed earlier run left behind: `guardian verify` finds a window's rows by partition and offset (a
    # row does not name its topic), so another run's rows at the same offsets would count in this run's window.
    _pg(settings.postgres_admin_dsn, CLEANUP)
    _pg(settings.postgres_admin_dsn, "DELETE FROM guardian_alert_changes WHERE symbol LIKE 'BENCH-F%'")

    def stopped(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # the rows' `finally` stop their workers and producers

    signal.signal(signal.SIGTERM, stopped)
    try:
        _run_rows(names, settings, redis_url, stack, plan, result)
    finally:
        for service in ("kafka", "redis", "postgres"):  # whatever a row left stopped
            if stack.services[service].process.pid() is None:
                stack.up(report=lambda line: None, only=service)
    result["load_average_after"] = _load()
    click.echo("")
    print_table(result["rows"])
    click.echo(f"load average before/after: {result['load_average_before']} / {result['load_average_after']}")
    click.echo(f"not produced here (see the JSON's not_produced): {', '.join(NOT_PRODUCED)}")
    return result


def _run_rows(names: list[str], settings: Settings, redis_url: str, stack: Stack, plan: Plan, result: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="guardian-faults-") as tmp:
        for name in names:
            click.echo(f"- {name}")
            began = time.monotonic()
            load = _load()
            try:
                row = _run_row(name, settings, redis_url, Path(tmp), stack, plan)
            except Exception as exc:  # one fault's harness failure must not hide the other rows
                row = {"fault": name, "error": f"{type(exc).__name__}: {exc}"}
                for service in ("kafka", "redis", "postgres"):  # whatever the row left stopped
                    if stack.services[service].process.pid() is None:
                        stack.up(report=lambda line: None, only=service)
            row["load_average_at_start"] = load
            row["row_seconds"] = round(time.monotonic() - began, 1)
            result["rows"].append(row)
            partial = REPO_ROOT / "bench" / "results" / "faults.partial.json"  # the rows so far, should the run stop
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(result, indent=2) + "\n")
            brief = {k: row.get(k) for k in BRIEF if k in row}
            click.echo(f"  {name}: {json.dumps(brief)}")
        _keep_logs(Path(tmp), REPO_ROOT / "bench" / "results" / "faults-logs")
        shutil.rmtree(tmp, ignore_errors=True)


def _keep_logs(workdir: Path, into: Path) -> None:
    """The workers' and producers' logs of the run, for the findings (the spools and data dirs go)."""
    shutil.rmtree(into, ignore_errors=True)
    for log_file in workdir.rglob("*.log"):
        target = into / log_file.relative_to(workdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_file, target)
