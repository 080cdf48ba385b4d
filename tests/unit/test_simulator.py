"""The simulated trading host emits a realistic, valid mix."""

from __future__ import annotations

from collections import Counter

from guardian.simulator import SYMBOLS, TradingHostSimulator


def run(seconds: float, per_second: int = 500) -> list:
    sim = TradingHostSimulator(seed=7)
    out = []
    for i in range(int(seconds * per_second)):
        out.extend(sim.decisions(i / per_second))
    return out


def test_mix_covers_every_detector_and_about_twenty_symbols():
    decisions = run(30)
    detectors = Counter(d.detector for d in decisions)
    assert set(detectors) == {"LATENCY_SPIKE_DETECTOR", "DRIFT_MONITOR", "CIRCUIT_BREAKER"}
    assert detectors["LATENCY_SPIKE_DETECTOR"] > detectors["DRIFT_MONITOR"] > detectors["CIRCUIT_BREAKER"]
    assert {d.symbol for d in decisions} == set(SYMBOLS) and len(SYMBOLS) == 20


def test_breaker_transitions_follow_the_state_machine():
    allowed = {("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED"), ("HALF_OPEN", "OPEN")}
    last: dict[str, str] = {}
    for d in run(60):
        if d.detector != "CIRCUIT_BREAKER":
            continue
        move = (d.payload["from_state"], d.payload["to_state"])
        assert move in allowed
        assert last.get(d.symbol, "CLOSED") == move[0]
        last[d.symbol] = move[1]
    assert "OPEN" in last.values() or "HALF_OPEN" in last.values() or "CLOSED" in last.values()


def test_bursts_multiply_the_rate_periodically():
    sim = TradingHostSimulator(burst_every_s=8, burst_length_s=1, burst_factor=5)
    assert sim.rate_multiplier(0.5) == 5
    assert sim.rate_multiplier(3.0) == 1
    assert sim.rate_multiplier(8.2) == 5
