"""What a worker writes back to Kafka (dead letters, alerts), durable before offsets are committed.

Nothing sent here may stop the worker: a record over Kafka's size limit (a dead letter of a
large event, an alert with a long summary) is cut to fit, with headers saying so and the
original's size and sha256, instead of raising MSG_SIZE_TOO_LARGE at the same record on every
restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from guardian.errors import GuardianError

MAX_RECORD_BYTES = 1_000_000  # librdkafka's message.max.bytes, set explicitly below
# Room for the record's own framing and the headers this module adds; the caller's headers count too.
FRAMING_MARGIN = 1_024
TRUNCATED_HEADER = "guardian.truncated"
ORIGINAL_BYTES_HEADER = "guardian.original.bytes"
ORIGINAL_SHA256_HEADER = "guardian.original.sha256"


class OutboxError(GuardianError, RuntimeError):
    """Kafka refused or did not acknowledge what the worker sent (dead letters, alerts)."""


def fit(value: bytes, key: bytes | None, headers: list | None, limit: int) -> tuple[bytes, list | None]:
    """`value` cut so that key + value + headers stay within `limit`, and headers naming the cut."""
    headers_size = sum(len(name) + len(v or b"") for name, v in headers or [])
    room = limit - FRAMING_MARGIN - len(key or b"") - headers_size
    if len(value) <= room:
        return value, headers
    marks = [
        (TRUNCATED_HEADER, b"true"),
        (ORIGINAL_BYTES_HEADER, str(len(value)).encode()),
        (ORIGINAL_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()),
    ]
    return value[: max(0, room)], [*(headers or []), *marks]


class Outbox:
    """An idempotent confluent-kafka producer; `flush()` returns only when everything sent is acknowledged."""

    def __init__(self, connection: dict[str, Any], max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        """`connection`: guardian.kafka_config.client_config(), bootstrap and security."""
        self._max_record_bytes = max_record_bytes
        self._producer = Producer(
            {
                **connection,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "compression.type": "lz4",
                "message.max.bytes": max_record_bytes,
            }
        )
        self._failed: list[tuple[KafkaError, Message]] = []
        # Sent and settled (acknowledged or failed) are counted apart: send() runs on the event loop,
        # delivery callbacks on whichever thread polls (flush() runs in an executor), so a send()
        # landing during a flush is never forgotten.
        self._sent = 0
        self._settled = 0
        self._settled_lock = threading.Lock()
        # Records librdkafka had no room for (its queue holds 100k): kept here and produced by flush(),
        # in its thread, so send() never waits on the event loop (before, it polled there until room
        # freed, which with Kafka away froze the whole worker, /healthz included).
        self._overflow: deque[tuple[str, bytes, bytes | None, list | None]] = deque()

    @property
    def pending(self) -> int:
        return self._sent - self._settled

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        with self._settled_lock:
            if error is not None:
                self._failed.append((error, message))
            self._settled += 1

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None) -> None:
        value, headers = fit(value, key, headers, self._max_record_bytes)
        self._sent += 1
        if not self._overflow:  # behind an overflow, in order
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                pass
        self._overflow.append((topic, value, key, headers))

    def _flush(self, timeout_s: float) -> int:
        """In flush()'s thread: produce the overflow (waiting for room), then wait for every ack."""
        deadline = time.monotonic() + timeout_s
        while self._overflow and time.monotonic() < deadline:
            topic, value, key, headers = self._overflow[0]
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                self._overflow.popleft()
            except BufferError:
                self._producer.poll(0.05)
        return self._producer.flush(max(0.0, deadline - time.monotonic())) + len(self._overflow)

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Wait (in a thread) until every record sent is acknowledged; raise if any failed or timed out.

        Records Kafka gave up on are sent again, so calling flush() until it returns loses nothing."""
        if not self.pending:
            return
        remaining = await asyncio.get_running_loop().run_in_executor(None, self._flush, timeout_s)
        if remaining:
            raise OutboxError(f"{remaining} record(s) not acknowledged by Kafka within {timeout_s} s")
        with self._settled_lock:
            failed, self._failed = self._failed, []
        for _, message in failed:
            self.send(message.topic(), message.value(), message.key(), message.headers())
        if failed:
            error = failed[0][0]
            raise OutboxError(f"Kafka refused {len(failed)} record(s), sent again: {error}") from KafkaException(error)

    def close(self) -> None:
        self._producer.flush(10)
