"""A trading host's own checkpoints: handed over by `checkpoint()` in microseconds, written by the
producer's background thread to the spool directory (what a restart on the same disk reads first)
and to the compacted checkpoint topic (what survives the loss of that disk).

Only the newest one matters: a checkpoint not written yet is replaced by a newer one, and a
failed send is sent again unless a newer one has been handed over meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Producer

from guardian.logs import get_logger
from guardian.producers.restore import LOCAL_CHECKPOINT
from guardian.schemas.checkpoint import HOST, MAX_RECORD_BYTES, key_for, pack

log = get_logger(__name__)


class HostCheckpoints:
    def __init__(self, producer_id: str, spool_dir: Path, topic: str, kafka_config: dict[str, Any], keep: int) -> None:
        self.producer_id = producer_id
        self.path = spool_dir / LOCAL_CHECKPOINT
        self.topic = topic
        self.keep = keep
        self._config = {**kafka_config, "message.max.bytes": MAX_RECORD_BYTES, "linger.ms": 0}
        self._producer: Producer | None = None  # made at the first checkpoint: most hosts may never call it
        self._lock = threading.Lock()
        self._pending: tuple[bytes, bool] | None = None  # (body, serialized JSON) not written yet
        self._last_id = 0
        self._slot = -1
        self._error = ""
        self.written = 0  # to the spool directory
        self.delivered = 0  # acknowledged by Kafka

    def offer(self, body: bytes, serialized: bool) -> None:
        with self._lock:
            self._pending = (body, serialized)

    def maintain(self) -> None:
        """Called by the background thread: write what is pending, serve Kafka's reports."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._write(*pending)
        if self._producer is not None:
            self._producer.poll(0)

    def _write(self, body: bytes, serialized: bool) -> None:
        checkpoint_id = self._last_id = max(time.time_ns() // 1000, self._last_id + 1)
        value = pack(HOST, self.producer_id, body, checkpoint_id=checkpoint_id, serialized=serialized)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(value)
        os.replace(temporary, self.path)  # whole or not at all: a crash leaves the previous one
        self.written += 1
        if self._producer is None:
            self._producer = Producer(self._config)
        self._slot = (self._slot + 1) % self.keep

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is None:
                self.delivered += 1
                self._error = ""
                return
            if str(error) != self._error:
                log.warning("host checkpoint not sent to kafka; sent again", error=str(error),
                            producer_id=self.producer_id)  # fmt: skip
                self._error = str(error)
            with self._lock:
                if self._pending is None and checkpoint_id == self._last_id:  # nothing newer to send instead
                    self._pending = (body, serialized)

        try:
            self._producer.produce(
                self.topic, value, key_for(HOST, self.producer_id, self._slot), on_delivery=delivered
            )
        except BufferError:  # earlier ones still queued (Kafka away): this one waits for the next round
            with self._lock:
                self._pending = self._pending or (body, serialized)

    def close(self, timeout: float) -> None:
        self.maintain()
        if self._producer is not None:
            left = self._producer.flush(timeout)
            if left:
                log.warning("host checkpoint not acknowledged by kafka at close; the spool directory has it",
                            producer_id=self.producer_id)  # fmt: skip
