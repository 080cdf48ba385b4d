"""A simulated trading host: the three guardrails deciding on ~20 symbols, with bursts.

It yields `Decision`s — what a guardrail decided about a symbol — at a target rate.
The mix follows what a live desk sees: mostly latency checks and drift samples,
latency spikes that cluster, circuit breakers that trip when a symbol's spikes
pile up, cool down to HALF_OPEN and then close or trip again. Every few seconds a
burst multiplies the rate on a handful of symbols, as a news event or a venue
hiccup would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from guardian.schemas.events import Detector, Payload

SYMBOLS = (
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "GOOGL",
    "META",
    "TSLA",
    "JPM",
    "BAC",
    "XOM",
    "EURUSD",
    "GBPUSD",
    "USDJPY",
    "AUDUSD",
    "XAUUSD",
    "BTCUSD",
    "ES",
    "NQ",
    "CL",
    "ZN",
)
VENUES = ("XNAS", "XNYS", "ARCX", "BATS", "LMAX", "CME")
DRIFT_METRICS = ("fill_ratio", "slippage_bps", "spread_bps", "reject_rate")


@dataclass(frozen=True)
class Decision:
    symbol: str
    detector: Detector
    severity: str  # INFO | WARNING | CRITICAL
    payload_type: Payload
    payload: dict


@dataclass
class _SymbolState:
    base_latency_us: int
    breaker: str = "CLOSED"
    trips: int = 0
    recent_spikes: int = 0
    open_until: float = 0.0


@dataclass
class TradingHostSimulator:
    symbols: tuple[str, ...] = SYMBOLS
    seed: int | None = None
    burst_every_s: float = 8.0
    burst_length_s: float = 1.0
    burst_factor: float = 5.0
    _rng: random.Random = field(init=False)
    _state: dict[str, _SymbolState] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._state = {s: _SymbolState(base_latency_us=self._rng.randint(80, 600)) for s in self.symbols}

    def rate_multiplier(self, elapsed_s: float) -> float:
        """Burst windows: `burst_factor` times the base rate for `burst_length_s` every `burst_every_s`."""
        return self.burst_factor if (elapsed_s % self.burst_every_s) < self.burst_length_s else 1.0

    def decisions(self, elapsed_s: float) -> Iterator[Decision]:
        """One guardrail decision (sometimes two: a spike that trips the breaker) at time `elapsed_s`."""
        rng = self._rng
        in_burst = self.rate_multiplier(elapsed_s) > 1.0
        # During a burst a few symbols take most of the traffic.
        symbol = rng.choice(self.symbols[:4]) if in_burst and rng.random() < 0.7 else rng.choice(self.symbols)
        state = self._state[symbol]
        if state.breaker == "OPEN" and elapsed_s >= state.open_until:
            yield self._transition(symbol, state, "HALF_OPEN", "cooldown elapsed", elapsed_s)
            return
        if state.breaker == "HALF_OPEN" and rng.random() < 0.2:
            healthy = rng.random() < 0.7
            yield self._transition(
                symbol, state, "CLOSED" if healthy else "OPEN", "probe ok" if healthy else "probe failed", elapsed_s
            )
            return
        if rng.random() < 0.65:
            yield from self._latency(symbol, state, in_burst, elapsed_s)
        else:
            yield self._drift(symbol)

    def _latency(self, symbol: str, state: _SymbolState, in_burst: bool, elapsed_s: float) -> Iterator[Decision]:
        rng = self._rng
        base = state.base_latency_us
        spike = rng.random() < (0.25 if in_burst else 0.03)
        observed = int(base * (rng.uniform(4, 20) if spike else rng.uniform(0.7, 1.4)))
        threshold = base * 3
        state.recent_spikes = state.recent_spikes + 1 if spike else max(0, state.recent_spikes - 1)
        yield Decision(
            symbol,
            Detector.LATENCY_SPIKE,
            "WARNING" if spike else "INFO",
            Payload.LATENCY_SPIKE,
            {
                "observed_latency_us": observed,
                "threshold_us": threshold,
                "p50_us": base,
                "p99_us": int(base * 2.5),
                "p999_us": int(base * 6),
                "window_seconds": 60,
                "z_score": round((observed - base) / (base * 0.3), 3),
                "order_path": rng.choice(("new_order", "cancel", "replace")),
                "venue": rng.choice(VENUES),
            },
        )
        if spike and state.breaker == "CLOSED" and state.recent_spikes >= 3:
            yield self._transition(symbol, state, "OPEN", f"{state.recent_spikes} latency spikes", elapsed_s)

    def _drift(self, symbol: str) -> Decision:
        rng = self._rng
        expected = rng.uniform(0.5, 5.0)
        score = abs(rng.gauss(0, 1))
        return Decision(
            symbol,
            Detector.DRIFT,
            "WARNING" if score > 2.5 else "INFO",
            Payload.DRIFT,
            {
                "metric": rng.choice(DRIFT_METRICS),
                "expected": round(expected, 4),
                "observed": round(expected * (1 + score * rng.choice((-0.1, 0.1))), 4),
                "drift_score": round(score, 4),
                "window_seconds": 300,
            },
        )

    def _transition(self, symbol: str, state: _SymbolState, to: str, reason: str, elapsed_s: float) -> Decision:
        cooldown = 5
        decision = Decision(
            symbol,
            Detector.CIRCUIT_BREAKER,
            "CRITICAL" if to == "OPEN" else "WARNING" if to == "HALF_OPEN" else "INFO",
            Payload.CIRCUIT_BREAKER,
            {
                "from_state": state.breaker,
                "to_state": to,
                "reason": reason,
                "trip_count": state.trips + (to == "OPEN"),
                "cooldown_seconds": cooldown,
            },
        )
        if to == "OPEN":
            state.trips += 1
            state.open_until = elapsed_s + cooldown
            state.recent_spikes = 0
        state.breaker = to
        return decision
