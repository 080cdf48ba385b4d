"""The fault bench's trading host: a GuardianProducer in a process of its own, so it can be killed with -9.

    python -m bench.fault_producer PRODUCER_ID TOPIC RATE BREAKER_PREFIX

Emits RATE events/s (drift events on 40 symbols; every BREAKER_EVERY-th event a circuit breaker OPEN on a
symbol of its own, closed again half a period later) through the producer's spool, with the settings
from the environment (GUARDIAN_SPOOL_DIR: the spool root, so a successor adopts a dead producer's spool).
Prints a JSON line of the producer's counters every STATUS_EVERY_S on stdout. SIGUSR1: stop emitting and
print a line with "paused" (the bench kills the process with -9 after it, knowing exactly what it held).
SIGTERM: stop emitting, flush (up to 300 s), close, print a line with "closed", exit.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from guardian.producers import GuardianProducer
from guardian.settings import Settings

BREAKER_EVERY = 100
STATUS_EVERY_S = 0.1
TICK_S = 0.001


def main() -> None:
    producer_id, topic, rate, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    asked: dict[str, bool] = {"pause": False, "stop": False}
    signal.signal(signal.SIGUSR1, lambda *_: asked.__setitem__("pause", True))
    signal.signal(signal.SIGTERM, lambda *_: asked.__setitem__("stop", True))
    producer = GuardianProducer(Settings(), producer_id=producer_id, topic=topic)
    opens = 0

    def status(**extra: object) -> None:
        line = {"t": time.time(), "epoch": producer.epoch, "opens": opens, **producer.stats(), **extra}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    began = time.perf_counter()
    reported = 0.0
    i = 0
    while not asked["stop"] and not asked["pause"]:
        if i % BREAKER_EVERY == 0:
            producer.circuit_breaker(f"{prefix}{i // BREAKER_EVERY:06d}", "CLOSED", "OPEN", reason="bench faults")
            opens += 1
        elif i % BREAKER_EVERY == BREAKER_EVERY // 2:
            producer.circuit_breaker(f"{prefix}{i // BREAKER_EVERY:06d}", "OPEN", "CLOSED", reason="bench faults")
        else:
            producer.drift(f"BENCH-FS{i % 40:02d}", metric="m", expected=1.0, observed=1.0 + i % 7, drift_score=0.1)
        i += 1
        now = time.perf_counter()
        if now - reported >= STATUS_EVERY_S:
            status()
            reported = now
        delay = began + i / rate - time.perf_counter()
        if delay > TICK_S:
            time.sleep(delay)
    if asked["pause"] and not asked["stop"]:
        status(paused=True)
        while not asked["stop"]:
            time.sleep(0.05)
    unflushed = producer.flush(300)
    status(unflushed=unflushed)
    producer.close(30)
    sys.stdout.write(json.dumps({"t": time.time(), "closed": True, "unflushed": unflushed}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
