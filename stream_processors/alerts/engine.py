"""The alert engine: events and the passing of time in, alert state changes out — as Alertmanager does it.

- An alert is identified by its fingerprint (rule + labels). While it is FIRING, the same
  condition again does not fire it again (dedup); when the condition clears it is RESOLVED.
- A FIRING alert is notified again every `repeat_interval_s` (a `repeat` notification).
- A silence (matchers on rule/severity/labels, with an expiry) mutes notifications of the
  alerts it matches; their state still changes and is still recorded.
- Time in conditions is event time (so a replay decides as the live run did); resolving
  quiet conditions, repeats and producer silence use the wall clock (`tick`).

All state goes through a `StateStore` (the worker uses a Faust GlobalTable, so it survives
restarts and is there for whichever worker gets a partition next). The engine is pure
logic: no I/O, the time is passed in, so it is tested without services.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from sinks.base import StoredEvent
from stream_processors.alerts.rules import (
    BreakerOpenRule,
    DriftSustainedRule,
    LatencySpikesRule,
    RuleSet,
)

MICROS = 1_000_000
SEEN_PRECISION_US = MICROS  # producer "last seen" is written at most once a second per partition
RESOLVED_KEPT_US = 24 * 3600 * MICROS  # resolved alerts are forgotten a day after they resolved

DEFAULT_SUMMARIES = {
    "breaker_open": "circuit breaker OPEN on {symbol}: {reason}",
    "latency_spikes": "{count} latency spikes on {symbol} within {window_s:g} s",
    "drift_sustained": "{metric} drift on {symbol} above {score_above:g} for {for_s:g} s (score {score:.2f})",
    "producer_silent": "producer {producer_id} sent nothing for {silent_s:.0f} s",
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
        if now_us >= self.expires_at_us:
            return False
        fields = {"rule": alert["rule"], "severity": alert["severity"], **alert["labels"]}
        return all(fields.get(name) == value for name, value in self.matchers.items())


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
    ) -> None:
        self.rules = rules
        self.store = store
        self.silences = silences
        self._cache: dict[str, dict | None] = {}
        self._breaker = rules.of_kind("breaker_open")
        self._spikes = rules.of_kind("latency_spikes")
        self._drift = rules.of_kind("drift_sustained")
        self._silent = rules.of_kind("producer_silent")
        self._by_name = {rule.name: rule for rule in rules.rules}

    # -- state, read through a cache (dropped when partitions move: another worker may have written) --
    def forget(self) -> None:
        self._cache.clear()

    def _get(self, key: str) -> dict | None:
        if key not in self._cache:
            self._cache[key] = self.store.get(key)
        return self._cache[key]

    def _set(self, key: str, value: dict) -> None:
        self._cache[key] = value
        self.store.set(key, value)

    def _delete(self, key: str) -> None:
        self._cache[key] = None
        self.store.delete(key)

    # -- events ------------------------------------------------------------------------------------
    def observe(self, batch: Sequence[StoredEvent], now_us: int) -> list[Notification]:
        out: list[Notification] = []
        seen: dict[tuple[str, int], int] = {}
        for stored in batch:
            event = stored.event
            seen[(event["producer_id"], stored.partition)] = now_us
            kind, payload = event["payload"]
            if kind.endswith("CircuitBreakerTransition"):
                for rule in self._breaker:
                    out += self._on_breaker(rule, event, payload, stored.partition, now_us)
            elif kind.endswith("LatencySpike"):
                for rule in self._spikes:
                    out += self._on_latency(rule, event, payload, stored.partition, now_us)
            elif kind.endswith("Drift"):
                for rule in self._drift:
                    out += self._on_drift(rule, event, payload, stored.partition, now_us)
        if self._silent:
            for (producer, partition), at in seen.items():
                key = f"seen:{producer}:{partition}"
                last = self._get(key)
                if last is None or at - last["at"] >= SEEN_PRECISION_US:
                    self._set(key, {"producer_id": producer, "at": at})
        return out

    def _on_breaker(self, rule: BreakerOpenRule, event: dict, payload: dict, partition: int, now_us: int) -> list:
        labels = {"symbol": event["symbol"]}
        if payload["to_state"] == "OPEN":
            return self._fire(rule, labels, partition, event, now_us, reason=payload["reason"])
        if payload["to_state"] == "CLOSED":  # HALF_OPEN is still a tripped breaker
            return self._resolve(rule, labels, event["event_time"], now_us, event["event_id"])
        return []

    def _on_latency(self, rule: LatencySpikesRule, event: dict, payload: dict, partition: int, now_us: int) -> list:
        if payload["observed_latency_us"] <= payload["threshold_us"]:
            return []
        labels = {"symbol": event["symbol"]}
        key = f"cond:{rule.name}:{event['symbol']}"
        horizon = event["event_time"] - int(rule.window_s * MICROS)
        times = [t for t in (self._get(key) or {"times": []})["times"] if t > horizon]
        times.append(event["event_time"])
        times = times[-rule.min_spikes :]  # only the newest k matter for ">= k within W"
        self._set(key, {"times": times, "partition": partition})
        if len(times) >= rule.min_spikes:
            return self._fire(rule, labels, partition, event, now_us, count=len(times), window_s=rule.window_s)
        return []

    def _on_drift(self, rule: DriftSustainedRule, event: dict, payload: dict, partition: int, now_us: int) -> list:
        labels = {"symbol": event["symbol"], "metric": payload["metric"]}
        key = f"cond:{rule.name}:{event['symbol']}:{payload['metric']}"
        state = self._get(key)
        if payload["drift_score"] > rule.score_above:
            since = state["above_since"] if state else event["event_time"]
            if state is None:
                self._set(key, {"above_since": since})
            if event["event_time"] - since >= rule.for_s * MICROS:
                return self._fire(
                    rule, labels, partition, event, now_us,
                    score=payload["drift_score"], score_above=rule.score_above, for_s=rule.for_s,
                )  # fmt: skip
            return []
        if state is not None:
            self._delete(key)
        return self._resolve(rule, labels, event["event_time"], now_us, event["event_id"])

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
                seen = self._get(key)
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
            alert = self._get(key)
            if alert is None or not owns(alert["partition"]):
                continue
            if alert["status"] == "RESOLVED":
                if now_us - alert["ends_at"] > RESOLVED_KEPT_US:
                    self._delete(key)
                continue
            rule = self._by_name.get(alert["rule"])
            # Resolved by time: a rule removed from the file, or a spike burst that has passed.
            gone = rule is None or (isinstance(rule, LatencySpikesRule) and self._burst_over(rule, alert, now_us))
            if gone:
                out += self._resolve_record(key, alert, now_us, now_us, None)
            elif now_us - alert["last_notified_us"] >= self.rules.repeat_interval_s * MICROS:
                alert = {**alert, "last_notified_us": now_us}
                self._set(key, alert)
                out.append(Notification(alert, repeat=True, silenced=self._silenced(alert, now_us)))
        return out

    def _burst_over(self, rule: LatencySpikesRule, alert: dict, now_us: int) -> bool:
        state = self._get(f"cond:{rule.name}:{alert['labels']['symbol']}") or {"times": []}
        return sum(1 for t in state["times"] if t > now_us - rule.window_s * MICROS) < rule.min_spikes

    # -- lifecycle ---------------------------------------------------------------------------------
    def _fire(
        self, rule: Any, labels: dict, partition: int, event: dict | None, now_us: int, **facts: Any
    ) -> list[Notification]:
        fp = fingerprint(rule.name, labels)
        key = f"alert:{fp}"
        current = self._get(key)
        if current is not None and current["status"] == "FIRING":
            return []  # dedup: the same alert is already firing
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
            "partition": partition,
            "last_notified_us": now_us,
        }
        self._set(key, alert)
        return [Notification(alert, silenced=self._silenced(alert, now_us))]

    def _resolve(self, rule: Any, labels: dict, at_us: int, now_us: int, event_id: str | None) -> list[Notification]:
        key = f"alert:{fingerprint(rule.name, labels)}"
        current = self._get(key)
        if current is None or current["status"] != "FIRING":
            return []
        return self._resolve_record(key, current, at_us, now_us, event_id)

    def _resolve_record(self, key: str, alert: dict, at_us: int, now_us: int, event_id: str | None) -> list:
        resolved = {**alert, "status": "RESOLVED", "ends_at": at_us, "event_id": event_id, "last_notified_us": now_us}
        self._set(key, resolved)
        return [Notification(resolved, silenced=self._silenced(resolved, now_us))]

    def _silenced(self, alert: dict, now_us: int) -> bool:
        return any(silence.matches(alert, now_us) for silence in self.silences())


def _summary(rule: Any, facts: dict) -> str:
    template = rule.summary or DEFAULT_SUMMARIES[rule.kind]
    try:
        return template.format(**facts)
    except (KeyError, ValueError, IndexError):  # a custom template naming a fact this alert lacks
        return DEFAULT_SUMMARIES[rule.kind].format(**facts)
