"""GuardianProducer: the one object a trading host needs to publish guardrail events.

    with GuardianProducer() as producer:
        producer.circuit_breaker("AAPL", "CLOSED", "OPEN", reason="5 spikes in 10 s", trip_count=1)

Guarantees
- emit() never blocks on the network and never raises because of the broker: it encodes,
  stamps the envelope and hands the bytes to librdkafka's local queue (or to the disk spool).
- Nothing is lost while Kafka is away: when librdkafka's queue is full, or the broker has not
  acknowledged anything for `spool_after_s` while events wait, new events go to an append-only
  disk spool. When the broker answers again, the spool drains in order *before* new events go
  to Kafka directly, so per-symbol order holds. Events librdkafka gives back undelivered (at
  close(), or failed) are older than the spooled ones and go to the spool's front. A spool left
  by a crash is drained on the next start.
- Kafka's side: idempotent producer, acks=all, key = symbol (per-symbol order), lz4.
- Exposure: events already in librdkafka's in-memory queue when an outage starts (at most
  `spool_after_s` worth) are moved to the front of the spool once Kafka has acknowledged nothing
  for `spool_after_s`; only a process killed within that window (or an event in flight to a broker
  that never answers) can lose them.
- Consumers deduplicate by event_id (and the hot view by producer_id + sequence): a spool
  re-drain after a failed delivery may send a record twice, never zero times.

flush(timeout) waits until everything emitted so far is acknowledged by Kafka, spool included;
it returns how many events are still pending. close(timeout) flushes, then writes whatever
Kafka has not acknowledged to the spool for the next start, and stops the background thread.
"""

from __future__ import annotations

import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import CollectorRegistry

from guardian.cpus import parse_cpu_list, running_on
from guardian.errors import GuardianError
from guardian.kafka_config import client_config
from guardian.logs import get_logger
from guardian.producers.drain import SpoolDrain
from guardian.producers.host_checkpoint import HostCheckpoints
from guardian.producers.metrics import ProducerCollector
from guardian.producers.orphans import TOPIC_FILE, SpoolInUseError, adopt, claim_orphans, lock_spool, set_aside
from guardian.producers.restore import RestoredState, restore
from guardian.producers.spool import FullPolicy, Spool
from guardian.schemas.codec import EventCodec
from guardian.schemas.events import Detector, Payload
from guardian.schemas.validation import (
    MAX_LENGTHS,
    EventRules,
    as_micros,
    check_payload,
    check_string,
    payload_checkers,
)
from guardian.settings import Settings, get_settings

log = get_logger(__name__)

# Plain strings for the typed helpers' hot path (an enum member costs a lookup per event).
LATENCY_SPIKE, DRIFT, BREAKER = (p.value for p in (Payload.LATENCY_SPIKE, Payload.DRIFT, Payload.CIRCUIT_BREAKER))
LATENCY_DETECTOR, DRIFT_DETECTOR, BREAKER_DETECTOR = (
    d.value for d in (Detector.LATENCY_SPIKE, Detector.DRIFT, Detector.CIRCUIT_BREAKER)
)


# librdkafka's queue.buffering.max.messages: when this many events await their acks, produce()
# raises BufferError and emit() spools.
QUEUE_CAPACITY = 200_000
# librdkafka refuses a record whose key + value + per-record framing (at most 36 bytes of varints
# and attributes in format v2) exceed message.max.bytes; emit() checks key + value against the
# limit minus this margin.
RECORD_FRAMING_MARGIN = 512
REPORT_CHECK_MASK = 15  # emit() looks at the clock for due delivery reports every 16 events
CALLER_QUIET_S = 0.1  # after this long (or 2 report intervals) without emit(), the background thread serves them
# sequence = epoch << EPOCH_SHIFT | count within the run. Each start of a producer takes a new, higher
# epoch, so its sequences continue above its predecessor's and the hot view's guard takes them at once.
# The whole value stays below 2^53, which the guard's Lua (doubles) compares exactly.
EPOCH_SHIFT = 32
EPOCH_FILE = "EPOCH"  # in the spool directory: the last epoch taken
EPOCH_ORIGIN_S = 1_767_225_600  # 2026-01-01T00:00:00Z; the clock's floor for an epoch is hours since then
MAX_RUN_COUNT = (1 << EPOCH_SHIFT) - 1
MAX_SYMBOL_LENGTH = MAX_LENGTHS["symbol"]
MAX_INSTANCES = 64  # <host>-<program>, <host>-<program>-2, ... for processes of one program on one host


class EventTooLargeError(GuardianError, ValueError):
    """The encoded event is larger than Kafka accepts (librdkafka's `message.max.bytes`): a bug in
    the caller, such as an unbounded `reason` string. Raised by emit(); nothing is sent or spooled."""


class ProducerClosedError(GuardianError, RuntimeError):
    """emit() after close(): nothing would deliver the event, so it is refused rather than lost."""


class GuardianProducer:
    """The trading host's producer; see the module docstring. `producer_id` (GUARDIAN_PRODUCER_ID) names
    the spool directory under `spool_dir` (GUARDIAN_SPOOL_DIR); unset, it is `<host>-<program>` (the
    main script's name), or `<host>-<program>-<n>` while lower numbers are held by running processes,
    so a restarted host finds its spool again. With the default spool directory, spools of producers
    that are gone are adopted and drained first (producers/orphans.py)."""

    _auth_error = ""  # the refused login last logged (error_cb may run before __init__ ends)

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        producer_id: str | None = None,
        topic: str | None = None,
        bootstrap_servers: str | None = None,
        spool_dir: Path | None = None,
        spool_after_s: float = 2.0,
        spool_max_bytes: int = 1024**3,
        spool_segment_bytes: int = 64 * 1024**2,
        spool_full_policy: FullPolicy = FullPolicy.DROP_NEWEST,
        fsync_interval_ms: int | None = None,
        fsync_every_records: int = 0,
        kafka_config: dict[str, Any] | None = None,
        io_cpus: frozenset[int] | None = None,
        report_interval_ms: float | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.host = socket.gethostname()
        self.topic = topic or settings.events_topic
        self._rules = EventRules.from_settings(settings)
        self.producer_id, spool_path, self._lock_file = _claim_identity(
            producer_id or settings.producer_id,
            self.host,
            spool_dir or settings.spool_dir,
            explicit_dir=bool(spool_dir),
        )
        check_string("producer_id", self.producer_id)
        check_string("host", self.host)
        (spool_path / TOPIC_FILE).write_text(self.topic)
        self._epoch = _next_epoch(spool_path)
        self._codec = EventCodec(registry_url=settings.schema_registry_url)
        self._payload_checks = payload_checkers(self._codec.schema)
        self._spool = Spool(
            spool_path,
            segment_bytes=spool_segment_bytes,
            max_bytes=spool_max_bytes,
            fsync_every_records=fsync_every_records,
            full_policy=spool_full_policy,
            maintained=True,  # the background thread does its file work, never emit()
        )
        if bootstrap_servers:
            settings = settings.model_copy(update={"kafka_bootstrap": bootstrap_servers})
        config = {
            **client_config(settings),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            # 10 ms: emit -> Redis p50 13 ms instead of 18 ms with 20; emit()'s own p99/p99.9 were the
            # same with 10 and 20 once delivery reports were served on a clock (docs/benchmarks.md).
            "linger.ms": settings.producer_linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": QUEUE_CAPACITY,
            # Undelivered events stay in librdkafka until close() spools them; a finite timeout
            # would fail them out of order.
            "message.timeout.ms": 0,
            "error_cb": self._on_error,
            # librdkafka's own lines ("connection refused" while the broker is away) go to the
            # host's logging tree instead of straight to stderr.
            "logger": logging.getLogger("guardian.producer.librdkafka"),
            **(kafka_config or {}),
        }
        self._max_event_bytes = int(config.get("message.max.bytes", 1_000_000)) - RECORD_FRAMING_MARGIN
        self._settings = settings
        self._spool_path = spool_path
        checkpoint_config = {**config, "message.timeout.ms": 60_000, "queue.buffering.max.messages": 16}
        self._checkpoints = HostCheckpoints(
            self.producer_id, spool_path, settings.checkpoints_topic, checkpoint_config, settings.checkpoints_kept
        )
        # Two librdkafka instances. The direct one reports only failures to Python; the drain one
        # reports every delivery, because each ack may free a spool segment. They never send at
        # the same time: the drain starts only once the direct queue is empty, and direct sending
        # resumes only once the spool is empty.
        if io_cpus is None and settings.producer_io_cpus:
            io_cpus = parse_cpu_list(settings.producer_io_cpus)
        with running_on(io_cpus):  # librdkafka's threads start here and inherit this placement
            self._producer = Producer(
                {**config, "delivery.report.only.error": True, "on_delivery": self._on_direct_failure}
            )
            self._drainer = Producer(config)
        self._spool_after_s = spool_after_s
        interval_ms = settings.producer_report_interval_ms if report_interval_ms is None else report_interval_ms
        self._report_interval_s = interval_ms / 1000
        self._caller_quiet_s = max(CALLER_QUIET_S, 2 * self._report_interval_s)
        interval_ms = settings.producer_fsync_interval_ms if fsync_interval_ms is None else fsync_interval_ms
        self._fsync_interval_s = interval_ms / 1000
        self._lock = threading.Lock()
        # Event ids: a random 64-bit prefix per run + the count within it, shaped as a version-8 UUID.
        # Unique like uuid4() at a tenth of its cost on the hot path.
        self._id_prefix = _random_id_prefix()
        self._count = 0  # events of this run; the sequence is the epoch's base + this
        self._sequence_base = self._epoch << EPOCH_SHIFT
        self._counts = dict.fromkeys(("emitted", "failed", "spooled", "dropped", "rejected"), 0)
        self._produced_direct = 0  # written by emit() only
        self._caller_polled_at = 0.0  # when emit() last served delivery reports (monotonic s)
        self._failed_direct = 0  # written by the failure callback, under the lock
        self._delivery_error = ""  # the last one logged: a failed queue would log each event
        self._last_progress = time.monotonic()
        self._last_delivered = 0
        self._spool_error = ""  # logged once until it changes or clears
        self._last_fsync = time.monotonic()
        # Spools of producers that are gone, drained before anything of ours (oldest first per symbol).
        self._orphans = [] if spool_dir else claim_orphans(settings.spool_dir, spool_path, self.topic)
        self._adopting = threading.Event()
        if self._orphans:
            self._adopting.set()
        self._adopt_config = {k: v for k, v in config.items() if k != "logger"}
        # A crashed process's spool, and adopted ones, go first: new events wait behind them in ours.
        self._spooling = self._spool.pending_records() > 0 or bool(self._orphans)
        self._closed = False  # set under the lock by close(): emit() refuses events from then on
        self._stop = threading.Event()
        self._drain = SpoolDrain(
            self._spool, self._drainer, self.topic, self._lock, stopping=self._stop,
            on_failed=self._count_failed, set_aside=self._set_aside, producer_id=self.producer_id,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._background, name=f"guardian-producer-{self.producer_id}")
        self._thread.daemon = True
        with running_on(io_cpus):
            self._thread.start()
            if self._orphans:
                adopter = threading.Thread(target=self._adopt_orphans, name=f"guardian-adopt-{self.producer_id}")
                adopter.daemon = True
                adopter.start()
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self.metrics_registry.register(ProducerCollector(self.stats, self.producer_id))

    # -- the hot path ---------------------------------------------------------------------------
    def emit(self, event: dict) -> None:
        """Publish one event. `event` needs symbol, detector and payload; the envelope is filled in.

        Never blocks on the network, never raises because of Kafka. Raises SchemaMismatchError
        for an event that does not match the schema and EventTooLargeError for one larger than
        Kafka accepts (both ValueErrors), and ProducerClosedError after close(): those are bugs
        in the caller.
        """
        with self._lock:
            if self._closed:
                raise ProducerClosedError(f"producer {self.producer_id} is closed; the event was not taken")
            if self._count >= MAX_RUN_COUNT:  # 2^32 - 1 events in one run: move on to a new epoch
                self._start_new_epoch()
            count = self._count + 1
            event["event_id"] = f"{self._id_prefix}8000-{count:012x}"
            sequence = self._sequence_base | count
            event["producer_id"] = self.producer_id
            event["sequence"] = sequence
            event["host"] = self.host
            stamped = "event_time" not in event
            if stamped:
                event["event_time"] = time.time_ns() // 1000
            if "severity" not in event:
                event["severity"] = "INFO"
            if "schema_version" not in event:
                event["schema_version"] = 1
            value = self._codec.encode(event)  # the schema first: the rules below assume its types
            symbol = event["symbol"]
            if len(symbol) > MAX_SYMBOL_LENGTH or "\x00" in symbol:  # schemas/validation.py, inline for speed
                check_string("symbol", symbol)
            payload_name, payload = event["payload"]
            self._payload_checks.get(payload_name, check_payload)(payload)
            if not stamped:  # the caller's own time: within the window a store can hold?
                self._rules.check_time(as_micros(event["event_time"]))
            key = symbol.encode()
            if len(value) + len(key) > self._max_event_bytes:  # spooled, it would block the spool
                raise EventTooLargeError(
                    f"event {event['event_id']} encodes to {len(value) + len(key)} bytes with its key; Kafka "
                    f"takes at most {self._max_event_bytes} (message.max.bytes - {RECORD_FRAMING_MARGIN}): "
                    "shorten its strings"
                )
            self._count = count  # only an event taken uses up a sequence number: refusals leave no gap
            self._counts["emitted"] += 1
            if not self._spooling:
                try:
                    self._producer.produce(self.topic, value, key)
                    self._produced_direct += 1
                except BufferError:
                    log.warning("kafka queue full: spooling to disk", producer_id=self.producer_id)
                    self._spooling = True
                except KafkaException as exc:
                    log.error("kafka refused the event: spooling to disk", error=str(exc))
                    self._spooling = True
            if self._spooling:
                self._to_spool(key, value)
        if not sequence & REPORT_CHECK_MASK and not self._spooling:
            self._serve_due_delivery_reports()

    @property
    def epoch(self) -> int:
        """This run's epoch: its sequences are `epoch << EPOCH_SHIFT | n` for its n-th event."""
        return self._epoch

    def _start_new_epoch(self) -> None:
        """Called under the lock after 2^32 - 1 events of one run (rare: 12 h at 100k events/s)."""
        self._epoch = _next_epoch(self._spool.directory)
        self._sequence_base = self._epoch << EPOCH_SHIFT
        self._id_prefix = _random_id_prefix()  # the count starts again: the ids must not repeat
        self._count = 0

    def _adopt_orphans(self) -> None:
        try:
            adopt(self._orphans, self._adopt_config, self.topic, self._stop)
        except Exception:  # a bug: our own spool must still drain
            log.exception("adopting spools of stopped producers failed", producer_id=self.producer_id)
        finally:
            self._adopting.clear()

    def _serve_due_delivery_reports(self) -> None:
        """Serve librdkafka's delivery reports from the caller's thread once `report_interval_ms`
        has passed, outside the lock (a failure callback takes it).

        confluent-kafka takes the GIL once per delivered message to run (or skip) its callback,
        ~0.2-0.7 µs each, and librdkafka serves every waiting report in one poll. From a second
        thread each of those takes the GIL away from a busy trading thread: measured on 2 cores,
        ~200 forced switches a second, emit() p99.9 74-90 µs, and reports served so slowly that
        librdkafka's queue filled and events went to the spool after 2 s of full-speed emits.
        Served here, the total cost is fixed; the interval decides how it is cut: every 64 events
        it fell on hundreds of calls a second of 50-1,000 µs each (p99.9 up to 130 µs on a warm
        broker), every 25 ms it falls on 40 calls a second and leaves p99.9 to the rest.
        """
        now = time.monotonic()
        if now - self._caller_polled_at >= self._report_interval_s:
            self._producer.poll(0)
            self._caller_polled_at = now

    def _to_spool(self, key: bytes, value: bytes, *, front: bool = False) -> None:
        try:
            kept = (self._spool.append_front if front else self._spool.append)(key, value)
        except OSError as error:  # the disk refused it (full, failing): counted, never raised at the caller
            kept = False
            if self._counts["dropped"] % 10_000 == 0:  # the first one, then every 10,000th
                log.error("spool write failed: event dropped", error=str(error), dropped=self._counts["dropped"] + 1)
        if kept:
            self._counts["spooled"] += 1
        else:
            self._counts["dropped"] += 1

    # -- typed helpers --------------------------------------------------------------------------
    def latency_spike(
        self,
        symbol: str,
        *,
        observed_latency_us: int,
        threshold_us: int,
        p50_us: int,
        p99_us: int,
        p999_us: int,
        window_seconds: int = 60,
        z_score: float = 0.0,
        order_path: str = "new_order",
        venue: str = "",
        severity: str | None = None,
    ) -> None:
        spike = observed_latency_us > threshold_us
        self.emit(
            {
                "symbol": symbol,
                "detector": LATENCY_DETECTOR,
                "severity": severity or ("WARNING" if spike else "INFO"),
                "payload": (
                    LATENCY_SPIKE,
                    {
                        "observed_latency_us": observed_latency_us,
                        "threshold_us": threshold_us,
                        "p50_us": p50_us,
                        "p99_us": p99_us,
                        "p999_us": p999_us,
                        "window_seconds": window_seconds,
                        "z_score": float(z_score),
                        "order_path": order_path,
                        "venue": venue,
                    },
                ),
            }
        )

    def drift(
        self,
        symbol: str,
        *,
        metric: str,
        expected: float,
        observed: float,
        drift_score: float,
        window_seconds: int = 300,
        severity: str | None = None,
    ) -> None:
        self.emit(
            {
                "symbol": symbol,
                "detector": DRIFT_DETECTOR,
                "severity": severity or "INFO",
                "payload": (
                    DRIFT,
                    {
                        "metric": metric,
                        "expected": float(expected),
                        "observed": float(observed),
                        "drift_score": float(drift_score),
                        "window_seconds": window_seconds,
                    },
                ),
            }
        )

    def circuit_breaker(
        self,
        symbol: str,
        from_state: str,
        to_state: str,
        *,
        reason: str = "",
        trip_count: int = 0,
        cooldown_seconds: int = 0,
        severity: str | None = None,
    ) -> None:
        self.emit(
            {
                "symbol": symbol,
                "detector": BREAKER_DETECTOR,
                "severity": severity or ("CRITICAL" if to_state == "OPEN" else "WARNING"),
                "payload": (
                    BREAKER,
                    {
                        "from_state": from_state,
                        "to_state": to_state,
                        "reason": reason,
                        "trip_count": trip_count,
                        "cooldown_seconds": cooldown_seconds,
                    },
                ),
            }
        )

    # -- recovery -------------------------------------------------------------------------------
    def checkpoint(self, state: Any) -> None:
        """Save the host's own guardrail state (rolling windows, baselines...): bytes, or anything orjson
        serializes (dicts, lists, numbers, strings, dataclasses). Never blocks on I/O: the background
        thread writes the newest one to the spool directory and to Kafka's checkpoint topic, and a newer
        call replaces one not written yet. `restore()` gives it back. Call it every few seconds."""
        if self._closed:
            raise ProducerClosedError("checkpoint() after close()")
        if isinstance(state, bytes | bytearray | memoryview):
            self._checkpoints.offer(bytes(state), serialized=False)
        else:
            self._checkpoints.offer(orjson.dumps(state), serialized=True)

    def restore(self, symbols: Iterable[str] | None = None, *, timeout_s: float | None = None) -> RestoredState:
        """The host's guardrail state at start, before trading resumes: per symbol the breaker, the newest
        latency figures and the newest drift per metric, and the host's own last `checkpoint()`.

        `symbols`: the symbols to restore (None: every symbol this producer emitted for). Returns within
        `timeout_s` (default GUARDIAN_RESTORE_TIMEOUT_S) and never raises for an unreachable store:
        `source` says what answered (`none` and `degraded` when nothing did, `problems` why). Each call
        emits a TRADING_HOST event; a degraded one fires the P0 alert `host-started-without-state`."""
        timeout = self._settings.restore_timeout_s if timeout_s is None else timeout_s
        result = restore(self._settings, self.producer_id, self._spool_path, symbols, timeout)
        if result.degraded:
            log.error("guardrail state not restored: deciding without it is up to the host",
                      problems=list(result.problems), producer_id=self.producer_id)  # fmt: skip
        else:
            log.info("guardrail state restored", source=result.source, symbols=len(result.symbols),
                     snapshot=result.snapshot_source, ms=result.elapsed_ms, producer_id=self.producer_id)  # fmt: skip
        try:
            self._emit_restore_event(result)
        except GuardianError as exc:  # restore() never raises for what it found; say it instead
            log.error("restore event not emitted", error=str(exc), producer_id=self.producer_id)
        return result

    def _emit_restore_event(self, result: RestoredState) -> None:
        self.emit(
            {
                "symbol": self.producer_id[:MAX_SYMBOL_LENGTH],
                "detector": Detector.TRADING_HOST.value,
                "severity": "CRITICAL" if result.degraded else "INFO",
                "payload": (
                    Payload.HOST_RESTORE.value,
                    {
                        "outcome": "DEGRADED" if result.degraded else "COMPLETE",
                        "source": result.source,
                        "symbols": len(result.symbols),
                        "snapshot_found": result.snapshot is not None,
                        "elapsed_ms": result.elapsed_ms,
                        "problems": "\n".join(result.problems)[: MAX_LENGTHS["problems"]],
                    },
                ),
            }
        )

    # -- delivery -------------------------------------------------------------------------------
    def _on_direct_failure(self, error: KafkaError | None, message: Any) -> None:
        """Only failures arrive here (delivery.report.only.error): re-spool the event."""
        if error is None:
            return
        with self._lock:
            self._failed_direct += 1
            self._counts["failed"] += 1
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:  # the broker's limit is below ours
                self._set_aside(message.value(), error)
                return
            self._spooling = True
            # Older than every spooled event (direct sending resumes only once the spool is empty),
            # so it goes before them: per-symbol order holds through close() and refused topics.
            self._to_spool(message.key(), message.value(), front=True)
        # Purges at close() are expected, not news; a failed queue fails each event the same way.
        if error.code() != KafkaError._PURGE_QUEUE and str(error) != self._delivery_error:
            self._delivery_error = str(error)
            log.error("delivery failed: events re-spooled (the rest are counted in `failed`)", error=str(error))

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("kafka producer fatal error", error=str(error))
        elif error.code() == KafkaError._AUTHENTICATION:  # events spool meanwhile; said once per message
            if error.str() != self._auth_error:
                log.error("kafka refuses the producer's credentials", error=error.str(), producer_id=self.producer_id)
            self._auth_error = error.str()
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            log.warning("all kafka brokers down", producer_id=self.producer_id)

    # -- the background thread ------------------------------------------------------------------
    def _background(self) -> None:
        """Runs until close() and must outlive any error: it is what drains the spool."""
        failure = ""  # logged once until it changes or clears
        while not self._stop.is_set():
            try:
                self._background_step()
                failure = ""
            except Exception as error:  # a bug, or an error from a callback: say it, back off, go on
                if repr(error) != failure:
                    log.exception("producer background work failed; retrying", producer_id=self.producer_id)
                    failure = repr(error)
                self._stop.wait(0.1)

    def _background_step(self) -> None:
        # Every wake-up of this thread takes the GIL from the trading thread mid-emit(): while
        # nothing is spooled it wakes 10 times a second, while draining 50 times. It serves the
        # direct producer's reports only when the caller has stopped emitting or while spooling
        # (emit() then leaves them alone: only connection errors arrive there).
        self._drainer.poll(0.02 if self._spooling else 0.1)
        now = time.monotonic()
        if self._spooling or now - self._caller_polled_at >= self._caller_quiet_s:
            self._producer.poll(0)
        try:
            if now - self._last_fsync >= self._fsync_interval_s:
                self._spool.fsync()
                self._last_fsync = now
            self._spool.maintain()
            self._spool_error = ""
        except OSError as error:  # a full or failing disk: draining goes on, and frees room
            if str(error) != self._spool_error:
                log.error("spool file work failed; retrying", error=str(error), producer_id=self.producer_id)
            self._spool_error = str(error)
        self._watch_progress(now)
        if self._spooling:
            self._drain_step()
        self._checkpoints.maintain()

    def _drain_step(self) -> None:
        # Older events go first: those still queued on the direct path and adopted spools.
        if len(self._producer) or self._adopting.is_set() or not self._drain.step():
            return
        with self._lock:
            if self._spool.pending_records() == 0 and self._drain.in_flight == 0:
                self._spooling = False
                self._delivery_error = ""
                log.info("spool drained: events go to kafka directly again", producer_id=self.producer_id)

    def _count_failed(self) -> None:
        self._counts["failed"] += 1

    def _watch_progress(self, now: float) -> None:
        """Switch to the spool when events wait and Kafka acknowledged none for `spool_after_s`."""
        queued = len(self._producer)
        delivered = self._produced_direct - queued - self._failed_direct
        if queued == 0 or delivered > self._last_delivered:
            self._last_progress = now
            self._last_delivered = delivered
            return
        if now - self._last_progress <= self._spool_after_s:
            return
        if not self._spooling:
            with self._lock:
                self._spooling = True
            log.warning(
                "kafka has acknowledged nothing for a while: new events go to the disk spool",
                waited_s=round(now - self._last_progress, 1),
                waiting_events=queued,
            )
        # The events waiting in librdkafka's memory go to the disk too (the front of the spool: they are
        # older than every spooled one), or a process killed during the outage loses them. Only what is
        # still queued: an event already sent may be acknowledged yet, and comes back here if it fails.
        self._producer.purge(in_queue=True, in_flight=False, blocking=False)
        self._producer.poll(0)  # each purged event is spooled by _on_direct_failure

    def _set_aside(self, value: bytes, error: KafkaError) -> None:
        """Called under the lock; rare by construction, since emit() refuses events over our limit."""
        self._counts["rejected"] += 1
        path = set_aside(self._spool.directory, value)
        log.error("kafka refused an event for good; kept on disk", error=error.str(), bytes=len(value), path=str(path))

    # -- lifecycle ------------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to `timeout` s until Kafka acknowledged every event emitted so far (spool
        included). Returns the number still pending (0 = all delivered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = self.pending()
            if pending == 0:
                return 0
            self._producer.flush(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.pending()

    def pending(self) -> int:
        """Events emitted but not yet acknowledged by Kafka (librdkafka's queue + the spool)."""
        return len(self._producer) + self._spool.pending_records()

    def close(self, timeout: float = 30.0) -> None:
        """Flush for up to `timeout` s; whatever Kafka has not acknowledged then is written to
        the spool (none of it is lost) and delivered by the next producer with this spool.
        emit() raises ProducerClosedError from the start of close() on; a second close() returns
        at once (a `with` block around an explicit close() makes one)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        began = time.monotonic()
        self.flush(timeout)
        self._stop.set()
        self._thread.join()
        self._checkpoints.close(max(1.0, timeout - (time.monotonic() - began)))
        # Purge what librdkafka still holds: each purged message comes back through the delivery
        # callback with an error and is written to the spool there.
        for producer in (self._producer, self._drainer):
            producer.purge(in_queue=True, in_flight=True, blocking=True)
            producer.poll(0)
            producer.flush(0)
        self._spool.close()
        self._lock_file.close()

    def __enter__(self) -> GuardianProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        spool = self._spool.snapshot()
        with self._lock:
            delivered = self._produced_direct - len(self._producer) - self._failed_direct + self._drain.delivered
            return {
                **self._counts,
                "delivered": delivered,
                "torn_records": spool.torn_records,
                "spool_records": spool.records,
                "spool_bytes": spool.bytes,
                "queue_depth": len(self._producer) + len(self._drainer),
                "spooling": int(self._spooling),
                "drain_blocked": int(bool(self._drain.problem)),
            }


def _random_id_prefix() -> str:
    prefix = uuid.uuid4().hex
    return f"{prefix[:8]}-{prefix[8:12]}-8{prefix[13:16]}-"


def _program_name() -> str:
    """The main script's name (`trader` for `python trader.py` or a `trader` console script), or the
    module's for `python -m desk.trader` (`desk.trader`; a package's `__main__` gives the package)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        name = spec.name.removesuffix(".__main__")
    else:
        name = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "python"


def _claim_identity(
    producer_id: str | None, host: str, spool_dir: Path, *, explicit_dir: bool
) -> tuple[str, Path, Any]:
    """(producer id, its spool directory, the held lock). An explicit id (or spool directory) must be
    free; the default one is the first free of <host>-<program>, <host>-<program>-2, ..."""
    if producer_id or explicit_dir:
        producer_id = producer_id or f"{host}-{_program_name()}"
        path = spool_dir if explicit_dir else spool_dir / producer_id
        try:
            return producer_id, path, lock_spool(path)
        except SpoolInUseError:
            raise SpoolInUseError(
                f"spool {path} is in use by another producer process; give each producer its own "
                "producer_id (GUARDIAN_PRODUCER_ID) or spool_dir"
            ) from None
    base = f"{host}-{_program_name()}"
    for instance in range(1, MAX_INSTANCES + 1):
        candidate = base if instance == 1 else f"{base}-{instance}"
        try:
            return candidate, spool_dir / candidate, lock_spool(spool_dir / candidate)
        except SpoolInUseError:
            continue
    raise SpoolInUseError(
        f"{MAX_INSTANCES} producers of {base} hold spools under {spool_dir}; set GUARDIAN_PRODUCER_ID"
    )


def _next_epoch(spool: Path) -> int:
    """A number higher than every earlier run's with this spool: the last one + 1, and never below the
    hours since EPOCH_ORIGIN_S (so a lost spool directory still yields a newer epoch, barring
    more than one restart an hour on average). Called with the spool's lock held."""
    path = spool / EPOCH_FILE
    try:
        last = int(path.read_text())
    except (FileNotFoundError, ValueError):
        last = 0
    epoch = max(last + 1, (int(time.time()) - EPOCH_ORIGIN_S) // 3600)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(str(epoch))
    temporary.replace(path)
    return epoch
