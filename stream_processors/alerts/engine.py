"""The alert engine: events and the passing of time in, alert state changes out — as Alertmanager does it.

- An alert is identified by its fingerprint (rule + labels). While it is FIRING, the same
  condition again does not fire it again (dedup); when the condition clears it is RESOLVED.
- A FIRING alert is notified again every `repeat_interval_s` (a `repeat` notification).
- A silence (matchers on rule/severity/labels, with an expiry) mutes notifications of the
  alerts it matches; their state still changes and is still recorded.
- Time in conditions is event time (so a replay decides as the live run did); resolving
  quiet conditions, repeats and producer silence use the wall clock (`tick`).
- Event times from the future: a spike's time counts in its window as stamped, but for the
  burst's liveness (`tick` resolving a passed burst) it is capped at the time the spike was
  observed (`now_us` of `observe`), so one stamped far ahead cannot keep a P0 firing until then.
  A drift streak's `above_since` is the earliest event time of the streak, so a far-future
  event cannot make the streak's age negative and hold the alert back.
- Values that carry no information are ignored: a drift score, a latency or a threshold that
  is missing, not a number, NaN or infinite leaves the rule's state as it was (no fire, no
  resolve, no reset).

Redelivery and replays. Delivery is at-least-once, and an operator may reset the group to the
earliest offset and replay the topic (its retention, 7 days by default). A replay starts from
the state the live run left (which is ahead of the replayed events), so:

- Conditions count each event once: the spike condition keeps the (event time, observed time,
  event id) of its newest `min_spikes` spikes; a spike already among them, or older than all of
  them, changes nothing.
- A replay is told apart by its Kafka offsets: the engine keeps, per partition of the events
  topic, the highest offset it has applied (`applied:{log id}:{partition}`, written with every
  batch that notified something and otherwise at most once a second; the log id is the topic's
  Kafka id, so a topic deleted and created again starts afresh). An event at or below that
  offset was seen before: a replay, or a redelivery after a crash. Event times play no part, so a
  late but new event (a spool drained after an outage, another host's clock) is news like any
  other.
- Every alert record remembers what the world (alerts topic, Redis, receivers) was last told of
  it: `notified_status` and the ids of the newest NOTIFIED_EVENTS_KEPT events whose transitions
  were notified (`notified_event_ids`). An event is *news* unless it was seen before or its id is
  in that list; the clock (`tick`) is always news.
- The exact rule: an event or a tick first changes the state as its condition says (a replay
  recomputes the state). A Notification is returned only if the cause is news AND the alert's
  status now differs from `notified_status`. So a replayed transition is silent, the time-based
  resolve of an alert a replay re-fired is silent (the world already believes RESOLVED), and an
  old event that resolves an alert firing now is silent. The same rule makes news reconcile the
  world: a new event meeting the condition of an alert FIRING silently notifies FIRING; a new
  event meeting the resolve condition of an alert RESOLVED silently notifies RESOLVED. A
  brand-new event still fires a resolved alert.
- `replayed` is True when the alert's status was reached silently. Repeats are sent only while
  both the alert and `notified_status` are FIRING.
- Resolved alerts are forgotten `resolved_kept_us` (default 8 days: the retention and a margin)
  after their last change, so a replay of the whole topic still finds them.

All state goes through a `StateStore` (the worker uses a Faust GlobalTable, so it survives
restarts and is there for whichever worker gets a partition next). Each worker writes only
the state of the partitions it owns; `tick` reads what other workers write (producers' last
seen) from the store, not from the cache. The engine is pure logic: no I/O, the time is passed
in, so it is tested without services.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from guardian.schemas.events import Payload, StoredEvent
from guardian.sinks.alert_state import mutes
from guardian.stream_processors.alerts.rules import (
    BreakerOpenRule,
    DriftSustainedRule,
    HostRestoreDegradedRule,
    LatencySpikesRule,
    RuleSet,
)

MICROS = 1_000_000
SEEN_PRECISION_US = MICROS  # producer "last seen" is written at most once a second per partition
# Resolved alerts are forgotten this long after their last change: longer than the events topic's
# retention (settings.events_retention_hours, 7 days), so a replay of the whole topic finds them.
RESOLVED_KEPT_US = 8 * 24 * 3600 * MICROS
NOTIFIED_EVENTS_KEPT = 32  # per alert: redeliveries of the newest notified events are recognised by id
APPLIED_EVERY_US = MICROS  # a partition's applied offset, when nothing was notified: at most this often

DEFAULT_SUMMARIES = {
    "breaker_open": "circuit breaker OPEN on {symbol}: {reason}",
    "latency_spikes": "{count} latency spikes on {symbol} within {window_s:g} s",
    "drift_sustained": "{metric} drift on {symbol} above {score_above:g} for {for_s:g} s (score {score:.2f})",
    "producer_silent": "producer {producer_id} sent nothing for {silent_s:.0f} s",
    "host_restore_degraded": "trading host {host} ({producer_id}) started without its guardrail state: {problems}",
}


class StateStore(Protocol):
    def get(self, key: str) -> dict | None: ...
    def set(self, key: str, value: dict) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys_with_prefix(self, prefix: str) -> Iterable[str]: ...


class DictStore(dict):
    """A StateStore in memory (tests, tools)."""

    def set(self, key: str, value: dict) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [key for key in self if key.startswith(prefix)]


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: dict[str, str]  # keys: "rule", "severity" or a label name
    expires_at_us: int
    comment: str = ""

    def matches(self, alert: dict, now_us: int) -> bool:
        return now_us < self.expires_at_us and mutes(self.matchers, alert)


@dataclass(frozen=True)
class Notification:
    alert: dict  # the alert record after the change (see AlertEngine._fire for its fields)
    repeat: bool = False
    silenced: bool = False


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    return _fingerprint(rule, tuple(sorted(labels.items())))


@lru_cache(maxsize=65_536)
def _fingerprint(rule: str, labels: tuple[tuple[str, str], ...]) -> str:
    # Computed for every event a rule looks at (to find its alert): cached, it costs a dict lookup.
    return hashlib.sha256(json.dumps([rule, list(labels)]).encode()).hexdigest()[:16]


def partition_of(key: str, partitions: int) -> int:
    """Which partition's owner is responsible for an alert not tied to an event (producer silence)."""
    return zlib.crc32(key.encode()) % partitions


class AlertEngine:
    def __init__(
        self,
        rules: RuleSet,
        store: StateStore,
        silences: Callable[[], Sequence[Silence]] = tuple,
        resolved_kept_us: int = RESOLVED_KEPT_US,
    ) -> None:
        self.rules = rules
        self.store = store
        self.silences = silences
        self.resolved_kept_us = resolved_kept_us
        self._cache: dict[str, dict | None] = {}
        self._breaker = rules.of_kind("breaker_open")
        self._spikes = rules.of_kind("latency_spikes")
        self._drift = rules.of_kind("drift_sustained")
        self._silent = rules.of_kind("producer_silent")
        self._restore = rules.of_kind("host_restore_degraded")
        self._by_name = {rule.name: rule for rule in rules.rules}
        self._dirty: dict[str, dict | None] = {}
        self.unflushed_writes = 0  # store writes since the owner last made them durable (hook.py)
        # The events topic's identity (its Kafka topic id), set by the owner; "" = unknown, and then
        # no event counts as seen before (a replay may page again, nothing is ever kept quiet wrongly).
        self.log_id = ""
        self._seen_before = False  # whether the event being observed was applied before (a replay)

    # -- state, read through a cache (dropped when partitions move: another worker may have written) --
    def forget(self) -> None:
        self._cache.clear()

    def _get(self, key: str) -> dict | None:
        if key not in self._cache:
            self._cache[key] = self.store.get(key)
        return self._cache[key]

    def _set(self, key: str, value: dict) -> None:
        self._cache[key] = value
        self._dirty[key] = value

    def _delete(self, key: str) -> None:
        self._cache[key] = None
        self._dirty[key] = None

    def _write_back(self) -> None:
        """One store write (one changelog record) per key changed by this observe()/tick(), not per event."""
        dirty, self._dirty = self._dirty, {}
        self.unflushed_writes += len(dirty)
        for key, value in dirty.items():
            if value is None:
                self.store.delete(key)
            else:
                self.store.set(key, value)

    def _applied(self, partition: int) -> int:
        """The highest offset of `partition` applied before (-1: none)."""
        last = self._get(f"applied:{self.log_id}:{partition}")
        return -1 if last is None else last["offset"]

    # -- events ------------------------------------------------------------------------------------
    def observe(self, batch: Sequence[StoredEvent], now_us: int) -> list[Notification]:
        out: list[Notification] = []
        seen: dict[tuple[str, int], int] = {}
        applied = {p: self._applied(p) for p in {stored.partition for stored in batch}} if self.log_id else {}
        newest: dict[int, int] = {}
        for stored in batch:
            event = stored.event
            seen[(event["producer_id"], stored.partition)] = now_us
            self._seen_before = stored.offset <= applied.get(stored.partition, -1)
            newest[stored.partition] = max(newest.get(stored.partition, -1), stored.offset)
            kind, payload = event["payload"]
            if kind == Payload.CIRCUIT_BREAKER:
                for rule in self._breaker:
                    out += self._on_breaker(rule, event, payload, stored.partition, now_us)
            elif kind == Payload.LATENCY_SPIKE:
                for rule in self._spikes:
                    out += self._on_latency(rule, event, payload, stored.partition, now_us)
            elif kind == Payload.DRIFT:
                for rule in self._drift:
                    out += self._on_drift(rule, event, payload, stored.partition, now_us)
            elif kind == Payload.HOST_RESTORE:
                for rule in self._restore:
                    out += self._on_restore(rule, event, payload, stored.partition, now_us)
        self._seen_before = False
        if self.log_id:
            for partition, offset in newest.items():
                key = f"applied:{self.log_id}:{partition}"
                last = self._get(key)
                # Written with every batch that notified anything, so every notified event is known as
                # seen (a replay re-reads the same log); else at most once a second: the events after
                # the last write notified nothing, and a replay brings the state to where it was then.
                if last is None or (offset > last["offset"] and (out or now_us - last["at"] >= APPLIED_EVERY_US)):
                    self._set(key, {"offset": offset, "at": now_us})
        if self._silent:
            for (producer, partition), at in seen.items():
                key = f"seen:{producer}:{partition}"
                last = self._get(key)
                if last is None or at - last["at"] >= SEEN_PRECISION_US:
                    self._set(key, {"producer_id": producer, "at": at})
        self._write_back()
        return out

    def _on_breaker(self, rule: BreakerOpenRule, event: dict, payload: dict, partition: int, now_us: int) -> list:
        labels = {"symbol": event["symbol"]}
        if payload["to_state"] == "OPEN":
            return self._fire(rule, labels, partition, event, now_us, reason=payload["reason"])
        if payload["to_state"] == "CLOSED":  # HALF_OPEN is still a tripped breaker
            return self._resolve(rule, labels, event["event_time"], now_us, event)
        return []

    def _on_restore(self, rule: HostRestoreDegradedRule, event: dict, payload: dict, partition: int,
                    now_us: int) -> list:  # fmt: skip
        labels = {"producer_id": event["producer_id"]}
        if payload["outcome"] == "DEGRADED":
            problems = payload["problems"].replace("\n", "; ")[:500] or "no source answered"
            return self._fire(rule, labels, partition, event, now_us, host=event["host"], problems=problems)
        return self._resolve(rule, labels, event["event_time"], now_us, event)

    def _on_latency(self, rule: LatencySpikesRule, event: dict, payload: dict, partition: int, now_us: int) -> list:
        observed, threshold = _finite(payload.get("observed_latency_us")), _finite(payload.get("threshold_us"))
        if observed is None or threshold is None or observed <= threshold:
            return []
        key = f"cond:{rule.name}:{event['symbol']}"
        spikes = _spikes(self._get(key))
        event_id, at = event["event_id"], event["event_time"]
        if any(spike[2] == event_id for spike in spikes):
            return []  # counted already: a redelivery or a replay
        # [event time (the window), observed time (liveness: a future stamp is capped), event id (once)]
        spikes.append([at, min(at, now_us), event_id])
        spikes.sort(key=lambda spike: (spike[0], spike[2] or ""))
        window = int(rule.window_s * MICROS)
        count = sum(1 for spike in spikes if at - window < spike[0] <= at)  # among events: event time only
        newest = spikes[-rule.min_spikes :]  # only the newest k matter for ">= k within W"
        if all(spike[2] != event_id for spike in newest):
            # Older than the newest k already counted: it changes nothing (it may be a redelivery whose
            # id was let go, and counting it could fire on an event the live run did not fire on).
            return []
        self._set(key, {"spikes": newest, "partition": partition})
        if count >= rule.min_spikes:
            labels = {"symbol": event["symbol"]}
            return self._fire(rule, labels, partition, event, now_us, count=count, window_s=rule.window_s)
        return []

    def _on_drift(self, rule: DriftSustainedRule, event: dict, payload: dict, partition: int, now_us: int) -> list:
        score = _finite(payload.get("drift_score"))
        if score is None:
            return []  # no information: neither above nor below, so the streak is left as it was
        labels = {"symbol": event["symbol"], "metric": payload["metric"]}
        key = f"cond:{rule.name}:{event['symbol']}:{payload['metric']}"
        state = self._get(key)
        at = event["event_time"]
        if score > rule.score_above:
            # The streak's earliest event time: an event stamped in the future (or arriving late)
            # cannot leave `since` after the streak's later events and hold the alert back.
            if state is None or at < state["above_since"]:
                state = {"above_since": at}
                self._set(key, state)
            if at - state["above_since"] >= rule.for_s * MICROS:
                return self._fire(
                    rule, labels, partition, event, now_us,
                    score=score, score_above=rule.score_above, for_s=rule.for_s,
                )  # fmt: skip
            return []
        if state is not None:
            self._delete(key)
        return self._resolve(rule, labels, at, now_us, event)

    # -- time --------------------------------------------------------------------------------------
    def tick(self, now_us: int, owns: Callable[[int], bool], partitions: int) -> list[Notification]:
        """Producer silence, resolving quiet spike bursts, repeats and forgetting old alerts.

        `owns(partition)` says whether this worker is responsible for a partition, so exactly one
        worker of a fleet acts on each alert."""
        out: list[Notification] = []
        if self._silent:
            last_seen: dict[str, int] = {}
            keys_of: dict[str, list[str]] = {}
            for key in self.store.keys_with_prefix("seen:"):
                # From the store, not the cache: the owners of other partitions write these keys.
                seen = self.store.get(key)
                if seen:
                    producer = seen["producer_id"]
                    last_seen[producer] = max(last_seen.get(producer, 0), seen["at"])
                    keys_of.setdefault(producer, []).append(key)
            for producer, at in last_seen.items():
                partition = partition_of(producer, partitions)
                if not owns(partition):
                    continue
                labels = {"producer_id": producer}
                silent_us = now_us - at
                for rule in self._silent:
                    if silent_us >= rule.forget_after_s * MICROS:
                        out += self._resolve(rule, labels, now_us, now_us, None)
                    elif silent_us >= rule.silent_for_s * MICROS:
                        out += self._fire(rule, labels, partition, None, now_us, silent_s=silent_us / MICROS)
                    else:
                        out += self._resolve(rule, labels, now_us, now_us, None)
                if all(silent_us >= rule.forget_after_s * MICROS for rule in self._silent):
                    for key in keys_of[producer]:
                        self._delete(key)
        for key in self.store.keys_with_prefix("alert:"):
            # Whose it is from the store (other workers' alerts need not fill the cache); an alert of
            # a partition this worker owns is this worker's to write, so its cached copy is the newest.
            stored = self.store.get(key)
            if stored is None or not owns(stored["partition"]):
                continue
            alert = self._get(key)
            if alert is None:
                continue
            if alert["status"] == "RESOLVED":
                if now_us - alert.get("changed_us", alert["last_notified_us"]) > self.resolved_kept_us:
                    # Resolved silently (by a replayed event) and no news since: the resolve stands; a
                    # world still believing it fires is told before the record is forgotten.
                    out += self._tell(key, alert, None, now_us)
                    self._delete(key)
                continue
            rule = self._by_name.get(alert["rule"])
            # Resolved by time: a rule removed from the file, or a spike burst that has passed.
            gone = rule is None or (isinstance(rule, LatencySpikesRule) and self._burst_over(rule, alert, now_us))
            if gone:
                out += self._resolve_record(key, alert, now_us, now_us, None)
            elif (
                _told(alert)["notified_status"] == "FIRING"  # not one a replay re-fired silently
                and now_us - alert["last_notified_us"] >= self.rules.repeat_interval_s * MICROS
            ):
                alert = {**alert, "last_notified_us": now_us}
                self._set(key, alert)
                out.append(Notification(alert, repeat=True, silenced=self._silenced(alert, now_us)))
        self._write_back()
        return out

    def _burst_over(self, rule: LatencySpikesRule, alert: dict, now_us: int) -> bool:
        spikes = _spikes(self._get(f"cond:{rule.name}:{alert['labels']['symbol']}"))
        # Observed times: a spike stamped in the future keeps a burst alive no longer than one stamped now.
        return sum(1 for spike in spikes if spike[1] > now_us - rule.window_s * MICROS) < rule.min_spikes

    # -- lifecycle ---------------------------------------------------------------------------------
    def _fire(
        self, rule: Any, labels: dict, partition: int, event: dict | None, now_us: int, **facts: Any
    ) -> list[Notification]:
        fp = fingerprint(rule.name, labels)
        key = f"alert:{fp}"
        current = self._get(key)
        if current is not None and current["status"] == "FIRING":
            return self._tell(key, current, event, now_us)  # dedup, unless the world believes otherwise
        alert = {
            "fingerprint": fp,
            "rule": rule.name,
            "severity": rule.severity,
            "status": "FIRING",
            "labels": labels,
            "summary": _summary(rule, {**labels, **facts}),
            "starts_at": event["event_time"] if event else now_us,
            "ends_at": None,
            "event_id": event["event_id"] if event else None,
            "event_time": event["event_time"] if event else None,  # with event_id: the event's row key
            "partition": partition,
            "last_notified_us": now_us,
        }
        return self._change(key, current, alert, event, now_us)

    def _resolve(self, rule: Any, labels: dict, at_us: int, now_us: int, event: dict | None) -> list[Notification]:
        key = f"alert:{fingerprint(rule.name, labels)}"
        current = self._get(key)
        if current is None:
            return []
        if current["status"] != "FIRING":
            return self._tell(key, current, event, now_us)  # resolved already, unless the world believes otherwise
        return self._resolve_record(key, current, at_us, now_us, event)

    def _resolve_record(self, key: str, alert: dict, at_us: int, now_us: int, event: dict | None) -> list[Notification]:
        event_id, event_time = (event["event_id"], event["event_time"]) if event else (None, None)
        resolved = {**alert, "status": "RESOLVED", "ends_at": at_us, "event_id": event_id, "event_time": event_time}
        return self._change(key, alert, resolved, event, now_us)

    def _change(
        self, key: str, before: dict | None, after: dict, event: dict | None, now_us: int
    ) -> list[Notification]:
        """A transition: the state changes; the world is told if the rule of the module docstring says so."""
        record = {**after, **_told(before), "changed_us": now_us}
        told = self._told_now(record, event, now_us)
        if told is None:  # silent: the world keeps what it was told, repeats keep their rhythm
            record.update(replayed=True, last_notified_us=before["last_notified_us"] if before else now_us)
        self._set(key, told or record)
        return [Notification(told, silenced=self._silenced(told, now_us))] if told else []

    def _tell(self, key: str, alert: dict, event: dict | None, now_us: int) -> list[Notification]:
        """No transition, but news showing the world wrong about this alert tells it (see the module docstring)."""
        told = self._told_now(alert, event, now_us)
        if told is None:
            return []  # the hot path (every event of a firing alert): no write
        self._set(key, told)
        return [Notification(told, silenced=self._silenced(told, now_us))]

    def _told_now(self, alert: dict, event: dict | None, now_us: int) -> dict | None:
        """The alert as notified now, or None if the rule says nothing is to be notified."""
        if alert.get("notified_status", alert["status"]) == alert["status"]:
            return None  # the world knows (the usual case, first: this runs for every event of an alert)
        told = _told(alert)
        if event is not None and (self._seen_before or event["event_id"] in told["notified_event_ids"]):
            return None  # not news: a replay, or a redelivery of a notified event
        ids = told["notified_event_ids"]
        if event is not None:
            ids = [*ids, event["event_id"]][-NOTIFIED_EVENTS_KEPT:]
        return {
            **alert,
            "notified_status": alert["status"],
            "notified_event_ids": ids,
            "replayed": False,
            "last_notified_us": now_us,
        }

    def _silenced(self, alert: dict, now_us: int) -> bool:
        return any(silence.matches(alert, now_us) for silence in self.silences())


def _told(alert: dict | None) -> dict:
    """What the world was told of an alert (a record written before these fields: its last change)."""
    if alert is None:
        return {"notified_status": None, "notified_event_ids": []}
    if "notified_status" in alert:
        return {key: alert[key] for key in ("notified_status", "notified_event_ids")}
    return {"notified_status": alert["status"], "notified_event_ids": [alert["event_id"]] if alert["event_id"] else []}


def _spikes(state: dict | None) -> list[list]:
    """[[event time, observed time, event id], ...] of a spike condition (state of before: times only)."""
    if state is None:
        return []
    if "spikes" in state:
        return [list(spike) for spike in state["spikes"]]
    return [[at, at, None] for at in state["times"]]


def _finite(value: Any) -> int | float | None:
    """A number that carries information; None for a missing value, a non-number, NaN or an infinity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _summary(rule: Any, facts: dict) -> str:
    template = rule.summary or DEFAULT_SUMMARIES[rule.kind]
    try:
        return template.format(**facts)
    except (KeyError, ValueError, IndexError):  # a custom template naming a fact this alert lacks
        return DEFAULT_SUMMARIES[rule.kind].format(**facts)
