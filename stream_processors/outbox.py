"""What a worker writes back to Kafka (dead letters, alerts), durable before offsets are committed."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, KafkaException, Message, Producer


class OutboxError(RuntimeError):
    pass


class Outbox:
    """An idempotent confluent-kafka producer; `flush()` returns only when everything sent is acknowledged."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "compression.type": "lz4",
            }
        )
        self._failed: list[tuple[KafkaError, Message]] = []
        self.pending = 0

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append((error, message))

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries free room
                self._producer.poll(0.05)
        self.pending += 1

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Wait (in a thread) until every record sent is acknowledged; raise if any failed or timed out.

        Records Kafka gave up on are sent again, so calling flush() until it returns loses nothing."""
        if not self.pending:
            return
        remaining = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, timeout_s)
        if remaining:
            raise OutboxError(f"{remaining} record(s) not acknowledged by Kafka within {timeout_s} s")
        failed, self._failed = self._failed, []
        self.pending = 0
        for _, message in failed:
            self.send(message.topic(), message.value(), message.key(), message.headers())
        if failed:
            error = failed[0][0]
            raise OutboxError(f"Kafka refused {len(failed)} record(s), sent again: {error}") from KafkaException(error)

    def close(self) -> None:
        self._producer.flush(10)
