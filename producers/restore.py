"""`restore()`: a trading host's guardrail state back when it starts, fail-open within a deadline.

The answer is assembled from the fastest source that is complete:

1. `hot_view` — the Redis hot view, when `guardian:hotview` says it is ready (one round trip);
2. `checkpoint+kafka` — the newest valid fleet checkpoint on the checkpoint topic, plus the
   events written after its offsets, applied with the same sequence guards the hot view uses;
3. `postgresql` — the newest stored event per symbol, detector and drift metric;
4. `none` — nothing answered in time: the result is `degraded`, with what went wrong.

The host's own snapshot (what it saved with `checkpoint()`) comes from the copy in its spool
directory, else from the checkpoint topic (which survives the loss of the host's disk),
whichever is newer when both are read.

Nothing here raises for an infrastructure failure, and the caller gets an answer by the
deadline even if a source hangs: the sources are tried in a daemon thread, and whatever it
has when time is up is returned, marked degraded.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from guardian.kafka_config import client_config
from guardian.kafka_ranges import consume_ranges
from guardian.logs import get_logger
from guardian.schemas.checkpoint import (
    FLEET,
    HOST,
    Checkpoint,
    CheckpointStore,
    CorruptCheckpointError,
    unpack,
)
from guardian.schemas.codec import EventCodec
from guardian.schemas.events import Detector, event_document
from guardian.settings import Settings

log = get_logger(__name__)

LOCAL_CHECKPOINT = "CHECKPOINT"  # in the producer's spool directory: its newest checkpoint record
STATUS_KEY = "guardian:hotview"  # sinks/redis_hot_view.py: `state` is `ready` when the view is complete
SOURCES = ("hot_view", "checkpoint+kafka", "postgresql")
# The part of the time left that each source may use, so a source that hangs (a black-holed address)
# leaves time for the next: measured here, each answers in well under 10% of the default deadline.
SHARES = (0.3, 0.6, 1.0)
GUARDRAILS = (Detector.LATENCY_SPIKE, Detector.DRIFT, Detector.CIRCUIT_BREAKER)  # TRADING_HOST is no guardrail
# The hot view's status and, per symbol (ARGV), the newest latency event, the breaker's last transition
# and the newest drift per metric: one round trip for any number of symbols (a pipeline of 3 commands
# per symbol spent 50-150 ms in the client for 1,000 symbols).
READ_VIEW = """
local out = {redis.call('HGET', KEYS[1], 'state')}
for i, symbol in ipairs(ARGV) do
  out[i + 1] = {
    redis.call('GET', 'guardian:latest:' .. symbol .. ':LATENCY_SPIKE_DETECTOR'),
    redis.call('HGET', 'guardian:breaker:' .. symbol, 'event'),
    redis.call('HGETALL', 'guardian:drift:' .. symbol),
  }
end
return out
"""


@dataclass(frozen=True)
class Breaker:
    state: str  # CLOSED, OPEN, HALF_OPEN
    trip_count: int
    cooldown_seconds: int
    since_us: int  # event time of the transition into `state`
    reason: str


@dataclass(frozen=True)
class SymbolState:
    breaker: Breaker | None = None
    latency: dict | None = None  # the newest latency event (`payload` has p50/p99/p999, threshold, z-score)
    drift: dict[str, dict] = field(default_factory=dict)  # metric -> the newest drift event of that metric


@dataclass(frozen=True)
class RestoredState:
    symbols: dict[str, SymbolState]
    snapshot: Any  # the host's own state as given to checkpoint(); None when there is none
    source: str  # which source answered: hot_view, checkpoint+kafka, postgresql, or none
    snapshot_source: str  # local, kafka, or none
    as_of_us: int  # event time of the newest event the state reflects (0: none)
    as_of_event: str  # that event's id
    snapshot_at_us: int  # when the snapshot was taken (0: none)
    degraded: bool  # True: no source answered in time; `symbols` may be empty or partial
    problems: tuple[str, ...]  # what each source that did not answer said
    elapsed_ms: float


class _View:
    """The derived state as the hot view keeps it: newest event per symbol and detector, breaker and
    drift per metric (event documents), with the per-producer sequence guards."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str], dict] = {}
        self.breaker: dict[str, dict] = {}
        self.drift: dict[str, dict[str, dict]] = {}
        self.guards: dict[tuple[str, str], dict[str, int]] = {}

    @classmethod
    def from_checkpoint_state(cls, state: dict, wanted: set[str] | None) -> _View:
        view = cls()
        for key, body in state.get("latest", {}).items():
            symbol, _, detector = key.rpartition(":")
            if (wanted is None or symbol in wanted) and detector in GUARDRAILS:
                view.latest[(symbol, detector)] = orjson.loads(body)
        for key, guards in state.get("seq", {}).items():
            symbol, _, detector = key.rpartition(":")
            if wanted is None or symbol in wanted:
                view.guards[(symbol, detector)] = {p: int(s) for p, s in guards.items()}
        for symbol, fields in state.get("breaker", {}).items():
            if (wanted is None or symbol in wanted) and "event" in fields:
                view.breaker[symbol] = orjson.loads(fields["event"])
        for symbol, metrics in state.get("drift", {}).items():
            if wanted is None or symbol in wanted:
                view.drift[symbol] = {m: orjson.loads(body) for m, body in metrics.items()}
        return view

    def apply(self, event: dict) -> None:
        """One event, as the hot view's batch script applies it (sequence-guarded per producer)."""
        if event["detector"] not in GUARDRAILS:
            return
        key = (event["symbol"], event["detector"])
        guards = self.guards.setdefault(key, {})
        if event["sequence"] <= guards.get(event["producer_id"], -1):
            return
        guards[event["producer_id"]] = event["sequence"]
        document = event_document(event)
        self.latest[key] = document
        if event["detector"] == Detector.CIRCUIT_BREAKER:
            self.breaker[event["symbol"]] = document
        elif event["detector"] == Detector.DRIFT:
            self.drift.setdefault(event["symbol"], {})[document["payload"]["metric"]] = document

    def symbols(self, producer_id: str | None) -> dict[str, SymbolState]:
        """Per symbol; with `producer_id`, only symbols whose newest events include one of that producer."""
        names = {s for s, _ in self.latest} | set(self.breaker) | set(self.drift)
        out = {}
        for symbol in sorted(names):
            latency = self.latest.get((symbol, Detector.LATENCY_SPIKE))
            drift = self.drift.get(symbol, {})
            breaker = self.breaker.get(symbol)
            if producer_id is not None:
                mine = [d for d in (latency, breaker, *drift.values()) if d and d["producer_id"] == producer_id]
                if not mine:
                    continue
            out[symbol] = SymbolState(_breaker(breaker), latency, drift)
        return out

    def newest(self) -> dict | None:
        documents = [*self.latest.values(), *self.breaker.values()]
        documents += [d for metrics in self.drift.values() for d in metrics.values()]
        return max(documents, key=lambda d: d["event_time"], default=None)


def _breaker(document: dict | None) -> Breaker | None:
    if document is None:
        return None
    payload = document["payload"]
    return Breaker(payload["to_state"], payload["trip_count"], payload["cooldown_seconds"],
                   document["event_time"], payload["reason"])  # fmt: skip


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while thousands of acyclic dicts are built: a collection over the
    host's heap in the middle made the p90 of a 1,000-symbol read 65-88 ms instead of 28-41 ms. Only
    around bounded work: the restore thread may outlive its deadline, and must not leave it off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Restorer:
    """One restore: the sources in order, each bounded by what is left of the deadline."""

    def __init__(self, settings: Settings, producer_id: str, spool_dir: Path | None, symbols: Iterable[str] | None,
                 deadline: float) -> None:  # fmt: skip
        self.settings = settings
        self.producer_id = producer_id
        self.spool_dir = spool_dir
        self.wanted = set(symbols) if symbols is not None else None
        self.deadline = deadline
        self.source_deadline = deadline
        self.problems: list[str] = []
        self.view: _View | None = None
        self.source = "none"
        self.snapshot: Checkpoint | None = None
        self.snapshot_source = "none"
        self._kafka_error: Exception | None = None
        self.done = threading.Event()

    def left(self) -> float:
        """Seconds the current source may still use."""
        return max(0.0, min(self.deadline, self.source_deadline) - time.monotonic())

    def run(self) -> None:
        try:
            self._local_snapshot()
            attempts = (self._hot_view, self._checkpoint_and_tail, self._postgresql)
            for source, attempt, share in zip(SOURCES, attempts, SHARES, strict=True):
                now = time.monotonic()
                if now >= self.deadline:
                    break
                self.source_deadline = now + (self.deadline - now) * share
                try:
                    view = attempt()
                except Exception as exc:  # any failure of a source: say it, try the next
                    view = None
                    self.problems.append(f"{source}: {exc}")
                if view is not None:
                    self.view, self.source = view, source
                    break
            self.source_deadline = self.deadline
            # Without Kafka (said once already), the snapshot cannot come from there either.
            if self.snapshot_source != "local" and self.left() > 0 and self._kafka_error is None:
                try:
                    self._kafka_snapshot()
                except Exception as exc:
                    self.problems.append(f"snapshot from kafka: {exc}")
        finally:
            self.done.set()

    # -- the host's own snapshot -----------------------------------------------------------------
    def _local_snapshot(self) -> None:
        path = self.spool_dir / LOCAL_CHECKPOINT if self.spool_dir else None
        if path is None or not path.exists():
            return
        try:
            self.snapshot, self.snapshot_source = unpack(path.read_bytes()), "local"
        except (OSError, CorruptCheckpointError) as exc:
            self.problems.append(f"local snapshot {path}: {exc}")

    def _kafka_snapshot(self) -> None:
        chosen, corrupt = self._newest(HOST, self.producer_id)
        self.problems += [f"snapshot: skipped {why}" for why in corrupt]
        if chosen is not None and (self.snapshot is None or chosen.id > self.snapshot.id):
            self.snapshot, self.snapshot_source = chosen, "kafka"

    def _newest(self, kind: str, owner: str) -> tuple[Checkpoint | None, list[str]]:
        """The newest valid checkpoint of `owner` on the topic; a Kafka that failed once is not asked again."""
        if self._kafka_error is not None:
            raise self._kafka_error
        try:
            return CheckpointStore(self.settings).latest_with_problems(kind, owner, timeout=self.left())
        except Exception as exc:
            self._kafka_error = exc
            raise

    # -- the sources of the derived state ----------------------------------------------------------
    def _hot_view(self) -> _View | None:
        import redis

        timeout = min(self.left(), 2.0)
        client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            if self.wanted is not None:
                symbols = sorted(self.wanted)
            else:
                keys = client.scan_iter("guardian:latest:*", count=5000)
                symbols = sorted({k.decode().removeprefix("guardian:latest:").rpartition(":")[0] for k in keys})
            with _collector_paused():  # bounded by the socket timeout
                reply = client.eval(READ_VIEW, 1, STATUS_KEY, *symbols)
        finally:
            client.close()
        status, rows = reply[0].decode() if reply[0] else "", reply[1:]
        if status != "ready":
            raise RuntimeError(f"not complete ({status or 'no status: lost or never built'})")
        state: dict[str, dict] = {"latest": {}, "breaker": {}, "drift": {}}
        with _collector_paused():
            for symbol, (latency, breaker, drift) in zip(symbols, rows, strict=True):
                if latency:
                    state["latest"][f"{symbol}:{Detector.LATENCY_SPIKE}"] = latency
                if breaker:
                    state["breaker"][symbol] = {"event": breaker}
                if drift:
                    state["drift"][symbol] = {drift[i].decode(): drift[i + 1] for i in range(0, len(drift), 2)}
            return _View.from_checkpoint_state(state, self.wanted)

    def _checkpoint_and_tail(self) -> _View | None:
        chosen, corrupt = self._newest(FLEET, self.settings.worker_group)
        self.problems += [f"checkpoint+kafka: skipped {why}" for why in corrupt]
        if chosen is None:
            raise RuntimeError("no valid fleet checkpoint")
        view = _View.from_checkpoint_state(chosen.state, self.wanted)
        self._apply_tail(view, chosen.offsets)
        return view

    def _apply_tail(self, view: _View, offsets: dict[int, int]) -> None:
        from confluent_kafka import Consumer, TopicPartition

        topic = self.settings.events_topic
        config = {"group.id": "guardian-restore", "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "log_level": 0}  # fmt: skip
        consumer = Consumer(client_config(self.settings, config))
        try:
            ranges = {}
            for partition in consumer.list_topics(topic, timeout=self.left()).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.left())
                ranges[partition] = (max(low, offsets.get(partition, low)), high)  # one it lacks: all of it
            codec = EventCodec(registry_url=self.settings.schema_registry_url)
            deadline = time.monotonic() + self.left()
            for messages in consume_ranges(consumer, topic, ranges, deadline=deadline):
                for message in messages:
                    key = message.key()
                    if self.wanted is not None and (key is None or key.decode(errors="replace") not in self.wanted):
                        continue  # keyed by symbol: skip decoding what was not asked for
                    try:
                        view.apply(codec.decode(message.value() or b""))
                    except Exception:  # the worker dead-letters what does not decode; so does this
                        continue
        finally:
            consumer.close()

    def _postgresql(self) -> _View | None:
        return asyncio.run(self._postgresql_view())

    async def _postgresql_view(self) -> _View:
        import asyncpg

        conn = await asyncpg.connect(self.settings.postgres_dsn, timeout=max(0.1, self.left()))
        try:
            where, args = "event_time > now() - make_interval(hours => $1)", [self.settings.events_retention_hours]
            if self.wanted is not None:
                where += " AND symbol = ANY($2::text[])"
                args.append(sorted(self.wanted))
            else:
                where += " AND producer_id = $2"
                args.append(self.producer_id)
            rows = await conn.fetch(
                "SELECT DISTINCT ON (symbol, detector, payload->>'metric') event_id::text, producer_id, sequence,"
                " host, symbol, detector, (extract(epoch FROM event_time) * 1000000)::bigint AS event_time,"
                " severity, schema_version, payload_type, payload::text"
                f" FROM guardian_events WHERE {where}"
                " ORDER BY symbol, detector, payload->>'metric', event_time DESC, sequence DESC",
                *args,
                timeout=max(0.1, self.left()),
            )
        finally:
            await conn.close()
        view = _View()
        for row in sorted(rows, key=lambda r: r["event_time"]):
            if row["detector"] not in GUARDRAILS:
                continue
            document = {**dict(row), "payload": orjson.loads(row["payload"])}
            key = (row["symbol"], row["detector"])
            if key not in view.latest or view.latest[key]["event_time"] <= row["event_time"]:
                view.latest[key] = document
            if row["detector"] == Detector.CIRCUIT_BREAKER:
                view.breaker[row["symbol"]] = document
            elif row["detector"] == Detector.DRIFT:
                view.drift.setdefault(row["symbol"], {})[document["payload"]["metric"]] = document
        return view

    # -- the answer ------------------------------------------------------------------------------
    def result(self, began: float) -> RestoredState:
        view, source = self.view, self.source  # set together, once a source answered
        problems = list(self.problems)
        if not self.done.is_set():
            problems.append(f"deadline reached after {(time.monotonic() - began) * 1000:.0f} ms")
        newest = view.newest() if view else None
        snapshot = self.snapshot
        with _collector_paused():
            symbols = view.symbols(None if self.wanted is not None else self.producer_id) if view else {}
        return RestoredState(
            symbols=symbols,
            snapshot=snapshot.state if snapshot else None,
            source=source,
            snapshot_source=self.snapshot_source if snapshot else "none",
            as_of_us=newest["event_time"] if newest else 0,
            as_of_event=newest["event_id"] if newest else "",
            snapshot_at_us=snapshot.created_at_us if snapshot else 0,
            degraded=view is None,
            problems=tuple(problems),
            elapsed_ms=round((time.monotonic() - began) * 1000, 3),
        )


def restore(settings: Settings, producer_id: str, spool_dir: Path | None, symbols: Iterable[str] | None,
            timeout_s: float) -> RestoredState:  # fmt: skip
    began = time.monotonic()
    restorer = Restorer(settings, producer_id, spool_dir, symbols, began + timeout_s)
    thread = threading.Thread(target=restorer.run, name=f"guardian-restore-{producer_id}", daemon=True)
    thread.start()
    restorer.done.wait(timeout_s)
    return restorer.result(began)
