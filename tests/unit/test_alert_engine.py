"""The alert engine's lifecycle, with time passed in: fire, dedup, resolve, repeat, silence, ownership."""

from __future__ import annotations

import itertools
import math

import pytest

from guardian.schemas.events import StoredEvent
from guardian.stream_processors.alerts.engine import MICROS, AlertEngine, DictStore, Silence, partition_of
from guardian.stream_processors.alerts.rules import parse_rules

T0 = 1_800_000_000 * MICROS
RULES = parse_rules(
    {
        "repeat_interval_s": 60,
        "rules": [
            {"name": "breaker", "kind": "breaker_open", "severity": "P0"},
            {"name": "spikes", "kind": "latency_spikes", "severity": "P0", "min_spikes": 3, "window_s": 10},
            {"name": "drift", "kind": "drift_sustained", "severity": "P1", "score_above": 3.0, "for_s": 30},
            {"name": "silent", "kind": "producer_silent", "severity": "P1", "silent_for_s": 20},
            {"name": "blind-start", "kind": "host_restore_degraded", "severity": "P0"},
        ],
    }
)
_ids = itertools.count()
_offsets = itertools.count()  # each new event is a new record of the log; a replay reuses the same one


def event(
    kind: str, payload: dict, symbol: str = "AAPL", at_s: float = 0.0, producer: str = "p1", partition: int = 3
) -> StoredEvent:
    body = {
        "event_id": f"e{next(_ids)}",
        "producer_id": producer,
        "symbol": symbol,
        "event_time": T0 + int(at_s * MICROS),
        "payload": (f"io.guardian.events.{kind}", payload),
    }
    return StoredEvent(body, partition=partition, offset=next(_offsets))


def of_rule(rule: str, notifications: list) -> list:
    """Only one rule's notifications (producer `p1` also goes silent while a test's clock runs)."""
    return [n for n in notifications if n.alert["rule"] == rule]


def breaker(to_state: str, **kw) -> StoredEvent:
    return event("CircuitBreakerTransition", {"to_state": to_state, "reason": "spikes"}, **kw)


def spike(observed: int, **kw) -> StoredEvent:
    return event("LatencySpike", {"observed_latency_us": observed, "threshold_us": 1000}, **kw)


def drift(score: float, **kw) -> StoredEvent:
    return event("Drift", {"metric": "fill_ratio", "drift_score": score}, **kw)


def statuses(notifications: list) -> list[tuple[str, str]]:
    return [(n.alert["rule"], n.alert["status"]) for n in notifications]


def alert_of(store: DictStore, rule: str) -> dict:
    (alert,) = [store[key] for key in store.keys_with_prefix("alert:") if store[key]["rule"] == rule]
    return alert


def test_breaker_open_fires_once_and_closed_resolves():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
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


def test_a_degraded_host_restore_pages_until_a_complete_one():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"

    def restore(outcome: str, at_s: float) -> StoredEvent:
        stored = event("HostRestore", {"outcome": outcome, "problems": "hot_view: refused\npostgresql: refused"},
                       symbol="host-a", producer="host-a", at_s=at_s)  # fmt: skip
        stored.event["host"] = "trader-7"
        return stored

    fired = of_rule("blind-start", engine.observe([restore("DEGRADED", 0)], T0))
    assert [(n.alert["severity"], n.alert["status"], n.alert["labels"]) for n in fired] == [
        ("P0", "FIRING", {"producer_id": "host-a"})
    ]
    assert (
        "trading host trader-7 (host-a) started without its guardrail state: hot_view: refused; post"
        in (fired[0].alert["summary"])
    )
    assert of_rule("blind-start", engine.observe([restore("DEGRADED", 1)], T0)) == []  # dedup
    resolved = of_rule("blind-start", engine.observe([restore("COMPLETE", 2)], T0))
    assert [n.alert["status"] for n in resolved] == ["RESOLVED"]


def test_the_same_condition_on_another_symbol_is_another_alert():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    fired = engine.observe([breaker("OPEN", symbol="AAPL"), breaker("OPEN", symbol="MSFT")], T0)
    assert len({n.alert["fingerprint"] for n in fired}) == 2


def test_k_spikes_within_the_window_fire_and_fewer_do_not():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    # Each batch observed when its newest spike happened (liveness uses the time a spike was observed).
    batch = [spike(5000, at_s=0), spike(5000, at_s=11), spike(900, at_s=12)]
    assert engine.observe(batch, T0 + 12 * MICROS) == []
    fired = engine.observe([spike(5000, at_s=15), spike(5000, at_s=16)], T0 + 16 * MICROS)  # 11, 15, 16 within 10 s
    assert [n.alert["rule"] for n in fired] == ["spikes"]
    assert engine.observe([spike(5000, at_s=17)], T0 + 17 * MICROS) == []  # still the same burst
    assert of_rule("spikes", engine.tick(T0 + 20 * MICROS, lambda p: True, 12)) == []  # 3 spikes in (10 s, 20 s]
    resolved = of_rule("spikes", engine.tick(T0 + 40 * MICROS, lambda p: True, 12))
    assert [n.alert["status"] for n in resolved] == ["RESOLVED"]


def test_drift_fires_only_after_staying_above_for_d_seconds_and_resolves_when_it_drops():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
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
    engine.log_id = "events"
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
    engine.log_id = "events"
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


# -- redelivery and replays ---------------------------------------------------------------------------
def test_a_redelivered_spike_is_counted_once():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    first, second = spike(5000, at_s=0), spike(5000, at_s=1)
    assert engine.observe([first, second], T0) == []
    assert engine.observe([first, second], T0) == []  # the batch again (at-least-once): still 2 spikes
    fired = engine.observe([spike(5000, at_s=2)], T0)
    assert statuses(fired) == [("spikes", "FIRING")]
    assert fired[0].alert["summary"].startswith("3 latency spikes")


def test_a_redelivered_spike_older_than_the_newest_k_changes_nothing():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    burst = [spike(5000, at_s=s) for s in range(5)]
    assert statuses(engine.observe(burst, T0)) == [("spikes", "FIRING")]
    assert statuses(of_rule("spikes", engine.tick(T0 + 30 * MICROS, lambda p: True, 12))) == [("spikes", "RESOLVED")]
    assert engine.observe(burst[:2], T0 + 31 * MICROS) == []  # its ids left the condition state


def test_a_replay_recomputes_the_state_but_does_not_notify_again():
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.log_id = "events"
    opened, closed = breaker("OPEN", at_s=0), breaker("CLOSED", at_s=5)
    assert statuses(engine.observe([opened], T0)) == [("breaker", "FIRING")]
    assert statuses(engine.observe([closed], T0 + 5 * MICROS)) == [("breaker", "RESOLVED")]
    # The group reset to the earliest offset: the same events again.
    assert engine.observe([opened], T0 + 100 * MICROS) == []
    assert alert_of(store, "breaker")["status"] == "FIRING"  # state recomputed ...
    assert alert_of(store, "breaker")["replayed"] is True  # ... silently
    assert of_rule("breaker", engine.tick(T0 + 500 * MICROS, lambda p: True, 12)) == []  # no repeat either
    assert engine.observe([closed], T0 + 501 * MICROS) == []
    assert alert_of(store, "breaker")["status"] == "RESOLVED"
    # A brand-new event is news: it fires a new notification.
    assert statuses(engine.observe([breaker("OPEN", at_s=600)], T0 + 600 * MICROS)) == [("breaker", "FIRING")]


def test_a_replayed_spike_burst_is_silent_on_both_fire_and_time_based_resolve():
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.log_id = "events"
    burst = [spike(5000, at_s=s) for s in range(3)]
    assert statuses(engine.observe(burst, T0)) == [("spikes", "FIRING")]
    assert statuses(of_rule("spikes", engine.tick(T0 + 30 * MICROS, lambda p: True, 12))) == [("spikes", "RESOLVED")]
    del store["cond:spikes:AAPL"]  # even with its condition state gone (e.g. older state), the replay is silent
    engine = AlertEngine(RULES, store)  # (restarted: no cached copy of it)
    assert engine.observe(burst, T0 + 40 * MICROS) == []
    assert alert_of(store, "spikes")["status"] == "FIRING"
    assert of_rule("spikes", engine.tick(T0 + 60 * MICROS, lambda p: True, 12)) == []  # resolved by time, silently
    assert alert_of(store, "spikes")["status"] == "RESOLVED"


def test_a_replay_of_an_alert_firing_now_keeps_repeating_and_its_next_resolve_is_notified():
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.log_id = "events"
    history = [breaker("OPEN", at_s=0), breaker("CLOSED", at_s=5), breaker("OPEN", at_s=10)]
    assert [n.alert["status"] for n in engine.observe(history, T0 + 10 * MICROS)] == ["FIRING", "RESOLVED", "FIRING"]
    assert engine.observe(history, T0 + 20 * MICROS) == []  # replayed: FIRING, RESOLVED, FIRING, all silent
    repeated = of_rule("breaker", engine.tick(T0 + 80 * MICROS, lambda p: True, 12))
    assert [(n.repeat, n.alert["status"]) for n in repeated] == [(True, "FIRING")]  # it is still firing
    assert statuses(engine.observe([breaker("CLOSED", at_s=90)], T0 + 90 * MICROS)) == [("breaker", "RESOLVED")]


def test_a_duplicate_fire_after_the_resolve_does_not_hide_the_next_real_one():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    opened = breaker("OPEN", at_s=0)
    engine.observe([opened, breaker("CLOSED", at_s=5)], T0)
    assert engine.observe([opened], T0 + 6 * MICROS) == []  # a late duplicate: silent (but now FIRING)
    assert engine.observe([breaker("CLOSED", at_s=7)], T0 + 7 * MICROS) == []  # receivers know it is resolved
    engine.observe([opened], T0 + 8 * MICROS)
    assert statuses(engine.observe([breaker("OPEN", at_s=9)], T0 + 9 * MICROS)) == [("breaker", "FIRING")]


def test_resolved_alerts_are_kept_for_the_replay_window():
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.log_id = "events"
    opened, closed = breaker("OPEN", at_s=0), breaker("CLOSED", at_s=5)
    engine.observe([opened, closed], T0)
    day = 24 * 3600 * MICROS
    engine.tick(T0 + 7 * day, lambda p: True, 12)  # the topic's retention: its events may still be replayed
    assert engine.observe([opened, closed], T0 + 7 * day) == []
    engine.tick(T0 + 16 * day, lambda p: True, 12)  # 8 days after the replay changed it
    assert store.keys_with_prefix("alert:") == []


def test_how_long_resolved_alerts_are_kept_is_a_parameter():
    store = DictStore()
    engine = AlertEngine(RULES, store, resolved_kept_us=3600 * MICROS)
    engine.observe([breaker("OPEN"), breaker("CLOSED", at_s=1)], T0)
    engine.tick(T0 + 3000 * MICROS, lambda p: True, 12)
    assert alert_of(store, "breaker")["status"] == "RESOLVED"
    engine.tick(T0 + 3602 * MICROS, lambda p: True, 12)
    assert [store[key]["rule"] for key in store.keys_with_prefix("alert:")] == ["silent"]  # p1 went quiet


# -- values that carry no information ------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_a_non_finite_drift_score_neither_fires_resolves_nor_resets(bad):
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    assert engine.observe([drift(bad, at_s=0), drift(4.0, at_s=5), drift(bad, at_s=20)], T0) == []
    assert engine.observe([drift(4.0, at_s=34)], T0) == []  # above since 5 (not 0), ...
    assert statuses(engine.observe([drift(4.0, at_s=35)], T0)) == [("drift", "FIRING")]  # ... not reset at 20
    assert engine.observe([drift(bad, at_s=36)], T0) == []  # not resolved
    assert statuses(engine.observe([drift(2.0, at_s=37)], T0)) == [("drift", "RESOLVED")]


@pytest.mark.parametrize(
    "payload",
    [
        {"observed_latency_us": math.nan, "threshold_us": 1000},
        {"observed_latency_us": math.inf, "threshold_us": 1000},
        {"observed_latency_us": 5000, "threshold_us": math.nan},
        {"observed_latency_us": 5000, "threshold_us": -math.inf},
        {"observed_latency_us": 5000},
        {"threshold_us": 1000},
        {"observed_latency_us": "5000", "threshold_us": 1000},
    ],
)
def test_a_spike_without_a_finite_latency_or_threshold_is_not_counted(payload):
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    assert engine.observe([event("LatencySpike", payload, at_s=s) for s in range(3)], T0) == []


# -- event times in the future -------------------------------------------------------------------------
def test_a_burst_stamped_in_the_future_resolves_once_it_is_over_by_the_clock():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    day = 24 * 3600
    assert statuses(engine.observe([spike(5000, at_s=day + s) for s in range(3)], T0)) == [("spikes", "FIRING")]
    assert of_rule("spikes", engine.tick(T0 + 5 * MICROS, lambda p: True, 12)) == []
    resolved = of_rule("spikes", engine.tick(T0 + 40 * MICROS, lambda p: True, 12))  # not a day later
    assert statuses(resolved) == [("spikes", "RESOLVED")]


def test_a_drift_event_stamped_in_the_future_does_not_hold_back_a_sustained_drift():
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "events"
    assert engine.observe([drift(4.0, at_s=10_000), drift(4.0, at_s=0)], T0) == []
    assert statuses(engine.observe([drift(4.0, at_s=31)], T0 + 31 * MICROS)) == [("drift", "FIRING")]


# -- a fleet of workers ----------------------------------------------------------------------------------
def test_a_producer_seen_by_another_worker_is_not_silent():
    store = DictStore()
    owner = partition_of("host-9", 12)
    a, b = AlertEngine(RULES, store), AlertEngine(RULES, store)  # two workers, one GlobalTable

    def owns_a(p: int) -> bool:  # worker a owns the half with the producer's silence alert
        return (p < 6) == (owner < 6)

    theirs = next(p for p in range(12) if not owns_a(p))  # the producer writes to a partition of worker b
    b.observe([drift(0.0, producer="host-9", partition=theirs)], T0)
    assert of_rule("silent", a.tick(T0 + 1 * MICROS, owns_a, 12)) == []
    b.observe([drift(0.0, producer="host-9", partition=theirs, at_s=25)], T0 + 25 * MICROS)
    assert of_rule("silent", a.tick(T0 + 30 * MICROS, owns_a, 12)) == []  # seen 5 s ago, by b
    assert of_rule("silent", b.tick(T0 + 30 * MICROS, lambda p: not owns_a(p), 12)) == []
    fired = of_rule("silent", a.tick(T0 + 50 * MICROS, owns_a, 12))  # now it is silent
    assert [(n.alert["status"], n.alert["labels"]) for n in fired] == [("FIRING", {"producer_id": "host-9"})]


def test_a_replay_while_an_alert_fires_does_not_resolve_it_on_an_old_event():
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.log_id = "events"
    history = [drift(2.0, at_s=0), drift(4.0, at_s=10), drift(4.0, at_s=40)]
    assert statuses(engine.observe(history, T0 + 40 * MICROS)) == [("drift", "FIRING")]
    # Replayed: the old 2.0 (which resolved nothing live) finds the alert firing; the receivers are not told.
    assert engine.observe(history, T0 + 50 * MICROS) == []
    assert alert_of(store, "drift")["status"] == "FIRING"
    repeated = of_rule("drift", engine.tick(T0 + 101 * MICROS, lambda p: True, 12))
    assert [(n.repeat, n.alert["status"]) for n in repeated] == [(True, "FIRING")]
    assert statuses(engine.observe([drift(1.0, at_s=102)], T0 + 102 * MICROS)) == [("drift", "RESOLVED")]


def test_a_late_but_new_event_is_news():
    """Event times do not decide what is news: a breaker OPEN spooled during an outage and drained
    after newer events of its symbol (or stamped by a host whose clock is behind) still pages."""
    engine = AlertEngine(RULES, DictStore())
    engine.log_id = "topic-1"
    assert statuses(engine.observe([breaker("OPEN", at_s=10), breaker("CLOSED", at_s=20)], T0)) == [
        ("breaker", "FIRING"), ("breaker", "RESOLVED")]  # fmt: skip
    assert statuses(engine.observe([breaker("OPEN", at_s=15)], T0)) == [("breaker", "FIRING")]


def test_a_replay_is_told_by_offsets_of_the_same_log_only():
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.log_id = "topic-1"
    history = [breaker("OPEN", at_s=0), breaker("CLOSED", at_s=5)]
    assert len(engine.observe(history, T0)) == 2
    assert engine.observe(history, T0 + MICROS) == []  # the same offsets again: a replay
    # The topic deleted and created again: its offsets start over, and they are new records.
    recreated = [StoredEvent({**s.event, "event_id": f"new-{s.event['event_id']}"}, s.partition, s.offset)
                 for s in history]  # fmt: skip
    engine.log_id = "topic-2"
    assert statuses(engine.observe(recreated, T0 + 2 * MICROS)) == [("breaker", "FIRING"), ("breaker", "RESOLVED")]


def test_with_no_log_id_nothing_counts_as_seen_before_but_notified_ids_still_do():
    engine = AlertEngine(RULES, DictStore())  # the topic's id unknown: never quiet by mistake
    opened = breaker("OPEN", at_s=0)
    assert len(engine.observe([opened, breaker("CLOSED", at_s=5)], T0)) == 2
    assert engine.observe([opened], T0) == []  # the notified OPEN redelivered: known by its id ...
    assert statuses(engine.observe([breaker("OPEN", at_s=1)], T0)) == [("breaker", "FIRING")]  # ... not others


def test_state_is_written_once_per_key_per_batch():
    writes = []

    class Counting(DictStore):
        def set(self, key, value):
            writes.append(key)
            super().set(key, value)

    engine = AlertEngine(RULES, Counting())
    engine.observe([spike(5000, at_s=i / 10) for i in range(50)], T0)
    assert sum(key.startswith("cond:") for key in writes) == 1


def test_every_notified_event_is_known_as_seen_even_within_the_second():
    """The applied offset is written with every batch that notified, so a replay of the newest
    events (after more than 32 transitions of one alert, which the id list alone would miss) is silent."""
    store = DictStore()
    engine = AlertEngine(RULES, store)
    engine.log_id = "events"
    flips = [breaker("OPEN" if i % 2 == 0 else "CLOSED", at_s=i / 100) for i in range(100)]
    for i, stored in enumerate(flips):  # one batch each, all within one second of the clock
        assert len(engine.observe([stored], T0 + i)) == 1
    assert engine.observe(flips, T0 + 200) == []
