"""The soak's trading host, in a process of its own so that its RSS is the producer's alone.

`python -m bench.soak_producer TOPIC PRODUCER_ID SPOOL_DIR RATE SECONDS SAMPLE_EVERY`

Guardrail traffic in the simulator's mix (guardian/simulator.py's 20 symbols: ~65% latency checks,
~35% drift samples, a latency spike now and then) at RATE events/s for SECONDS, and on a schedule a
circuit breaker that opens on one symbol and closes again BREAKER_OPEN_S later, one symbol after the
other: the default rules fire a P0 on each OPEN and resolve it on the CLOSED.

It talks to the bench over its stdin and stdout, a line each:
  W                       warm-up sent and flushed; it waits for a line on stdin before the clock starts
  R <t0>                  the rate's clock started at t0 (time.monotonic(), the same clock in every process)
  S <key> <seq> <t>       a sampled event: the hot view key whose guard shows it, its sequence, emitted at t
  B <to_state> <symbol> <t>
  D <emitted> <unflushed> <spooled> <opens> <closes>   done (emitted counts the warm-up too)
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from guardian.producers import GuardianProducer
from guardian.producers.producer import EPOCH_SHIFT
from guardian.settings import Settings
from guardian.simulator import DRIFT_METRICS, SYMBOLS, VENUES

WARMUP_EVENTS = 200
BREAKER_EVERY_S = 10.0  # one breaker opens every 10 s...
BREAKER_OPEN_S = 5.0  # ...and closes 5 s later, so at most one alert of this rule fires at a time
# ~1.6 spikes per symbol per 10 s: the latency-spike-burst rule (5 in 10 s) fires now and then
SPIKE_PROBABILITY = 0.001
PACING_TICK_S = 0.001  # as bench/pipeline.py: sleep only when more than a tick ahead


def main(argv: list[str]) -> None:
    topic, producer_id, spool, rate_text, seconds_text, sample_text = argv
    rate, seconds, sample_every = int(rate_text), float(seconds_text), int(sample_text)
    rng = random.Random(17)
    base_us = {symbol: rng.randint(80, 600) for symbol in SYMBOLS}
    out = sys.stdout
    emitted = opens = closes = 0
    with GuardianProducer(Settings(), producer_id=producer_id, topic=topic, spool_dir=Path(spool)) as p:
        for _ in range(WARMUP_EVENTS):
            p.drift("WARMUP", metric="m", expected=1.0, observed=1.0, drift_score=0.0)
        emitted = WARMUP_EVENTS
        p.flush(60)
        out.write("W\n")
        out.flush()
        sys.stdin.readline()
        base = p.epoch << EPOCH_SHIFT
        began = time.monotonic()
        out.write(f"R {began}\n")
        out.flush()
        total = int(rate * seconds)
        next_breaker, breaker_n, open_symbol = began + BREAKER_EVERY_S / 2, 0, None
        for i in range(total):
            now = time.monotonic()
            if now >= next_breaker:  # part of the rate, as a breaker's transition is on a real host
                if open_symbol is None:
                    open_symbol = SYMBOLS[breaker_n % len(SYMBOLS)]
                    p.circuit_breaker(open_symbol, "CLOSED", "OPEN", reason="soak", trip_count=breaker_n + 1)
                    opens += 1
                    out.write(f"B OPEN {open_symbol} {now}\n")
                    next_breaker += BREAKER_OPEN_S
                else:
                    p.circuit_breaker(open_symbol, "OPEN", "CLOSED", reason="soak: probe ok")
                    closes += 1
                    out.write(f"B CLOSED {open_symbol} {now}\n")
                    open_symbol, breaker_n = None, breaker_n + 1
                    next_breaker += BREAKER_EVERY_S - BREAKER_OPEN_S
                emitted += 1
            else:
                symbol = SYMBOLS[rng.randrange(len(SYMBOLS))]
                if rng.random() < 0.65:
                    b = base_us[symbol]
                    spike = rng.random() < SPIKE_PROBABILITY
                    observed = int(b * (rng.uniform(4, 20) if spike else rng.uniform(0.7, 1.4)))
                    p.latency_spike(symbol, observed_latency_us=observed, threshold_us=b * 3, p50_us=b,
                                    p99_us=int(b * 2.5), p999_us=b * 6, z_score=(observed - b) / (b * 0.3),
                                    venue=VENUES[i % len(VENUES)])  # fmt: skip
                    detector = "LATENCY_SPIKE_DETECTOR"
                else:
                    expected = rng.uniform(0.5, 5.0)
                    score = abs(rng.gauss(0, 1))
                    p.drift(symbol, metric=DRIFT_METRICS[i % len(DRIFT_METRICS)], expected=expected,
                            observed=expected * (1 + score * 0.1), drift_score=score)  # fmt: skip
                    detector = "DRIFT_MONITOR"
                emitted += 1
                if i % sample_every == 0:
                    out.write(f"S guardian:seq:{symbol}:{detector} {base | emitted} {now}\n")
                    out.flush()
            delay = began + (i + 1) / rate - time.monotonic()
            if delay > PACING_TICK_S:
                time.sleep(delay)
        unflushed = p.flush(120)
        spooled = p.stats()["spooled"]
    out.write(f"D {emitted} {unflushed} {spooled} {opens} {closes}\n")
    out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
