"""The alert engine's lifecycle, with time passed in: fire, dedup, resolve, repeat, silence, ownership."""

from __future__ import annotations

import itertools

from sinks.base import StoredEvent
from stream_processors.alerts.engine import MICROS, AlertEngine, DictStore, Silence, partition_of
from stream_processors.alerts.rules import parse_rules

T0 = 1_800_000_000 * MICROS
RULES = parse_rules(
    {
        "repeat_interval_s": 60,
        "rules": [
            {"name": "breaker", "kind": "breaker_open", "severity": "P0"},
            {"name": "spikes", "kind": "latency_spikes", "severity": "P0", "min_spikes": 3, "window_s": 10},
            {"name": "drift", "kind": "drift_sustained", "severity": "P1", "score_above": 3.0, "for_s": 30},
            {"name": "silent", "kind": "producer_silent", "severity": "P1", "silent_for_s": 20},
        ],
    }
)
_ids = itertools.count()


def event(kind: str, payload: dict, symbol: str = "AAPL", at_s: float = 0.0, producer: str = "p1") -> StoredEvent:
    body = {
        "event_id": f"e{next(_ids)}",
        "producer_id": producer,
        "symbol": symbol,
        "event_time": T0 + int(at_s * MICROS),
        "payload": (f"io.guardian.events.{kind}", payload),
    }
    return StoredEvent(body, partition=3, offset=0)


def of_rule(rule: str, notifications: list) -> list:
    """Only one rule's notifications (producer `p1` also goes silent while a test's clock runs)."""
    return [n for n in notifications if n.alert["rule"] == rule]


def breaker(to_state: str, **kw) -> StoredEvent:
    return event("CircuitBreakerTransition", {"to_state": to_state, "reason": "spikes"}, **kw)


def spike(observed: int, **kw) -> StoredEvent:
    return event("LatencySpike", {"observed_latency_us": observed, "threshold_us": 1000}, **kw)


def drift(score: float, **kw) -> StoredEvent:
    return event("Drift", {"metric": "fill_ratio", "drift_score": score}, **kw)


def test_breaker_open_fires_once_and_closed_resolves():
    engine = AlertEngine(RULES, DictStore())
    fired = engine.observe([breaker("OPEN")], T0)
    assert [(n.alert["rule"], n.alert["status"], n.alert["labels"]) for n in fired] == [
        ("breaker", "FIRING", {"symbol": "AAPL"})
    ]
    assert "circuit breaker OPEN on AAPL" in fired[0].alert["summary"]
    assert engine.observe([breaker("OPEN", at_s=1), breaker("HALF_OPEN", at_s=2)], T0) == []  # dedup
    resolved = engine.observe([breaker("CLOSED", at_s=3)], T0)
    assert [(n.alert["status"], n.alert["fingerprint"]) for n in resolved] == [
        ("RESOLVED", fired[0].alert["fingerprint"])
    ]
    assert resolved[0].alert["ends_at"] == T0 + 3 * MICROS
    assert engine.observe([breaker("OPEN", at_s=4)], T0)[0].alert["status"] == "FIRING"  # a new episode


def test_the_same_condition_on_another_symbol_is_another_alert():
    engine = AlertEngine(RULES, DictStore())
    fired = engine.observe([breaker("OPEN", symbol="AAPL"), breaker("OPEN", symbol="MSFT")], T0)
    assert len({n.alert["fingerprint"] for n in fired}) == 2


def test_k_spikes_within_the_window_fire_and_fewer_do_not():
    engine = AlertEngine(RULES, DictStore())
    assert engine.observe([spike(5000, at_s=0), spike(5000, at_s=11), spike(900, at_s=12)], T0) == []
    fired = engine.observe([spike(5000, at_s=15), spike(5000, at_s=16)], T0)  # 11, 15, 16 within 10 s
    assert [n.alert["rule"] for n in fired] == ["spikes"]
    assert engine.observe([spike(5000, at_s=17)], T0) == []  # still the same burst
    assert of_rule("spikes", engine.tick(T0 + 20 * MICROS, lambda p: True, 12)) == []  # 3 spikes in (10 s, 20 s]
    resolved = of_rule("spikes", engine.tick(T0 + 40 * MICROS, lambda p: True, 12))
    assert [n.alert["status"] for n in resolved] == ["RESOLVED"]


def test_drift_fires_only_after_staying_above_for_d_seconds_and_resolves_when_it_drops():
    engine = AlertEngine(RULES, DictStore())
    assert engine.observe([drift(4.0, at_s=0), drift(5.0, at_s=20)], T0) == []
    assert engine.observe([drift(1.0, at_s=25), drift(4.0, at_s=26), drift(4.0, at_s=50)], T0) == []  # reset at 25
    fired = engine.observe([drift(4.5, at_s=56)], T0)
    assert [(n.alert["rule"], n.alert["labels"]) for n in fired] == [
        ("drift", {"symbol": "AAPL", "metric": "fill_ratio"})
    ]
    assert [n.alert["status"] for n in engine.observe([drift(2.0, at_s=57)], T0)] == ["RESOLVED"]


def test_a_silent_producer_fires_on_its_owner_only_and_resolves_when_it_speaks():
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.observe([drift(0.0, producer="host-7")], T0)
    owner = partition_of("host-7", 12)
    assert engine.tick(T0 + 10 * MICROS, lambda p: True, 12) == []
    assert engine.tick(T0 + 30 * MICROS, lambda p: p != owner, 12) == []  # another worker's job
    fired = engine.tick(T0 + 30 * MICROS, lambda p: p == owner, 12)
    assert [(n.alert["rule"], n.alert["labels"]) for n in fired] == [("silent", {"producer_id": "host-7"})]
    engine.observe([drift(0.0, producer="host-7")], T0 + 31 * MICROS)
    assert [n.alert["status"] for n in engine.tick(T0 + 32 * MICROS, lambda p: p == owner, 12)] == ["RESOLVED"]


def test_a_producer_gone_for_good_is_forgotten_and_its_alert_resolves():
    store = DictStore()
    engine = AlertEngine(RULES, store)  # forget_after_s defaults to 3600
    engine.observe([drift(0.0, producer="host-8")], T0)
    assert [n.alert["status"] for n in engine.tick(T0 + 30 * MICROS, lambda p: True, 12)] == ["FIRING"]
    assert [n.alert["status"] for n in engine.tick(T0 + 3601 * MICROS, lambda p: True, 12)] == ["RESOLVED"]
    assert store.keys_with_prefix("seen:") == []
    assert engine.tick(T0 + 3700 * MICROS, lambda p: True, 12) == []


def test_a_firing_alert_repeats_every_repeat_interval():
    engine = AlertEngine(RULES, DictStore())
    engine.observe([breaker("OPEN")], T0)
    assert of_rule("breaker", engine.tick(T0 + 59 * MICROS, lambda p: True, 12)) == []
    repeated = of_rule("breaker", engine.tick(T0 + 61 * MICROS, lambda p: True, 12))
    assert [(n.repeat, n.alert["status"]) for n in repeated] == [(True, "FIRING")]
    assert of_rule("breaker", engine.tick(T0 + 62 * MICROS, lambda p: True, 12)) == []


def test_silences_mute_matching_alerts_until_they_expire():
    silences = [Silence("s1", {"rule": "breaker", "symbol": "AAPL"}, expires_at_us=T0 + 60 * MICROS)]
    engine = AlertEngine(RULES, DictStore(), silences=lambda: silences)
    fired = engine.observe([breaker("OPEN", symbol="AAPL"), breaker("OPEN", symbol="MSFT")], T0)
    assert {n.alert["labels"]["symbol"]: n.silenced for n in fired} == {"AAPL": True, "MSFT": False}
    later = of_rule("breaker", engine.tick(T0 + 61 * MICROS, lambda p: True, 12))  # repeats, after the silence expired
    assert {n.alert["labels"]["symbol"]: n.silenced for n in later} == {"AAPL": False, "MSFT": False}


def test_state_survives_a_new_engine_on_the_same_store():
    store = DictStore()
    AlertEngine(RULES, store).observe([breaker("OPEN")], T0)
    successor = AlertEngine(RULES, store)  # a restarted worker, or the partition's next owner
    assert successor.observe([breaker("OPEN", at_s=1)], T0) == []
    assert [n.alert["status"] for n in successor.observe([breaker("CLOSED", at_s=2)], T0)] == ["RESOLVED"]
