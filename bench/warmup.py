"""Warm a freshly started local broker before benchmarks measure the machine around it.

A JVM runs new code in its interpreter and compiles the hot paths as it goes: in a new broker's
first minutes its JIT compiler threads took 50-60% of one of this host's two cores and the broker's
own threads ran slower, which the benchmarks measured as tail latency of the pipeline around it
(docs/benchmarks.md). A production broker has been up for days. So when the local broker is new,
the benchmarks first drive its produce and fetch paths (the producer's settings, a consumer group
with commits, on a scratch topic) until its compiler threads go quiet, and record that they did.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from guardian.cpus import threads_named
from guardian.kafka_config import client_config
from guardian.settings import Settings
from guardian.stack.kafka_service import JIT_THREAD_NAME
from guardian.stream_processors.batch_source import WORKER_FETCH

QUIET_JIT_SHARE = 0.05  # compiler threads under 5% of a core...
QUIET_WINDOW_S = 5.0  # ...over this long means the hot paths are compiled
MIN_S = 20.0
MAX_S = 120.0
# The load alternates every PHASE_S between a burst and a trickle: full fetches and produce batches,
# then fetches that wait in the broker's purgatory for fetch.min.bytes as the worker's do at 5k/s.
RATES = (20_000, 2_000)  # events/s
PHASE_S = 5.0
RECORD = os.urandom(160)  # about an encoded event's size


def jit_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by the JVM's JIT compiler threads (Linux /proc)."""
    ticks = 0
    for tid, _name in threads_named(pid, JIT_THREAD_NAME):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def warm_broker(settings: Settings, broker_pid: int, report: Callable[[str], None]) -> dict:
    """Load the broker until its JIT is quiet (or MAX_S); returns what was done, for the results."""
    topic = f"bench.warmup.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(settings))
    admin.create_topics([NewTopic(topic, settings.events_partitions, 1)])[topic].result(timeout=30)
    producer = Producer(
        client_config(settings, {"enable.idempotence": True, "acks": "all", "compression.type": "lz4",
                                 "linger.ms": settings.producer_linger_ms})
    )  # fmt: skip
    consumer = Consumer(
        client_config(settings, {"group.id": f"bench-warmup-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                                 "enable.auto.commit": False, **WORKER_FETCH})
    )  # fmt: skip
    consumer.subscribe([topic])
    keys = [f"W{i:02d}".encode() for i in range(20)]
    samples: deque[tuple[float, float]] = deque()  # (time, JIT CPU seconds)
    began = time.monotonic()
    next_report = began + 5
    sent = consumed = 0
    share = float("nan")
    try:
        while True:
            now = time.monotonic()
            samples.append((now, jit_cpu_seconds(broker_pid)))
            while samples[0][0] < now - QUIET_WINDOW_S:
                samples.popleft()
            if now - began >= QUIET_WINDOW_S:
                share = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
                if (share < QUIET_JIT_SHARE and now - began >= MIN_S) or now - began >= MAX_S:
                    break
            if now >= next_report:
                report(f"warming the broker: {now - began:.0f} s, JIT compiler threads at {share:.0%} of a core")
                next_report += 5
            batch = RATES[int((now - began) // PHASE_S) % len(RATES)] // 10
            for i in range(batch):  # a tenth of a second's worth, then consume what is there
                producer.produce(topic, RECORD, keys[i % 20])
            sent += batch
            producer.poll(0)
            deadline = now + 0.1
            while (left := deadline - time.monotonic()) > 0:
                consumed += len(consumer.consume(5000, timeout=min(left, 0.02)))
            consumer.commit(asynchronous=True)
    finally:
        producer.flush(30)
        consumer.close()
        admin.delete_topics([topic])
    seconds = round(time.monotonic() - began, 1)
    report(f"broker warm after {seconds} s ({sent} events produced, {consumed} consumed; JIT at {share:.0%})")
    return {"seconds": seconds, "events_produced": sent, "events_consumed": consumed, "jit_share": round(share, 3)}
