"""restore()'s in-memory view: events applied as the hot view's script applies them."""

from __future__ import annotations

import orjson

from guardian.producers.restore import _View
from guardian.schemas.events import event_document
from guardian.stream_processors.recovery.state import merge_ops


def event(sequence: int, detector: str, payload: tuple, producer: str = "p", symbol: str = "S") -> dict:
    return {"event_id": f"e{sequence}", "producer_id": producer, "sequence": sequence, "host": "h", "symbol": symbol,
            "detector": detector, "event_time": 1000 + sequence, "severity": "INFO", "schema_version": 1,
            "payload": payload}  # fmt: skip


def breaker(sequence: int, to_state: str, **kw) -> dict:
    return event(sequence, "CIRCUIT_BREAKER", ("io.guardian.events.CircuitBreakerTransition",
                 {"from_state": "CLOSED", "to_state": to_state, "reason": "r", "trip_count": sequence,
                  "cooldown_seconds": 5}), **kw)  # fmt: skip


def drift(sequence: int, metric: str) -> dict:
    return event(sequence, "DRIFT_MONITOR", ("io.guardian.events.Drift", {"metric": metric, "expected": 1.0,
                 "observed": 2.0, "drift_score": float(sequence), "window_seconds": 60}))  # fmt: skip


def test_a_checkpoint_then_its_tail_gives_the_newest_per_key_and_never_goes_back():
    checkpoint = {
        "latest": {"S:CIRCUIT_BREAKER": orjson.dumps(event_document(breaker(5, "OPEN"))).decode()},
        "seq": {"S:CIRCUIT_BREAKER": {"p": "5"}},
        "breaker": {"S": {"state": "OPEN", "event": orjson.dumps(event_document(breaker(5, "OPEN"))).decode()}},
    }
    view = _View.from_checkpoint_state(checkpoint, None)
    view.apply(breaker(4, "CLOSED"))  # older than the checkpoint: a redelivery, ignored
    view.apply(drift(6, "fill"))
    view.apply(drift(7, "slip"))
    view.apply(breaker(8, "HALF_OPEN"))
    view.apply(event(9, "TRADING_HOST", ("io.guardian.events.HostRestore", {})))  # not a guardrail
    state = view.symbols(None)["S"]
    assert (state.breaker.state, state.breaker.trip_count, state.breaker.since_us) == ("HALF_OPEN", 8, 1008)
    assert {m: d["sequence"] for m, d in state.drift.items()} == {"fill": 6, "slip": 7}
    assert view.newest()["event_id"] == "e8"


def test_symbols_without_a_list_are_those_of_the_asking_producer():
    view = _View()
    view.apply(breaker(1, "OPEN", producer="mine", symbol="A"))
    view.apply(breaker(1, "OPEN", producer="theirs", symbol="B"))
    assert set(view.symbols("mine")) == {"A"}
    assert set(view.symbols(None)) == {"A", "B"}


def test_merge_ops_never_overwrite_and_guards_take_the_maximum():
    ops = merge_ops({"latest": {"S:D": "{}"}, "seq": {"S:D": {"p": "7"}}, "silences": {"id": "{}"},
                     "alerts_active": ["fp"]})  # fmt: skip
    assert ops == ["S", "guardian:latest:S:D", "", "{}", "M", "guardian:seq:S:D", "p", "7",
                   "H", "guardian:silences", "id", "{}", "A", "guardian:alerts:active", "", "fp"]  # fmt: skip
