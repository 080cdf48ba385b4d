"""Reading a test topic back with a plain confluent-kafka consumer."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer

from guardian.schemas.codec import EventCodec
from guardian.settings import Settings


def consume_events(settings: Settings, topic: str, expected: int, timeout: float = 120.0) -> list[dict]:
    """Decode every record of `topic` (from the start) until `expected` arrived and the topic is quiet."""
    codec = EventCodec()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            messages = consumer.consume(10_000, timeout=0.5)
            for message in messages:
                if message.error() is None:
                    events.append(codec.decode(message.value()))
            if len(events) >= expected:
                # keep reading briefly: duplicates, if any, must be seen too
                quiet_since = quiet_since or time.monotonic()
                if not messages and time.monotonic() - quiet_since > 1.0:
                    break
    finally:
        consumer.close()
    return events


def assert_per_symbol_order(events: list[dict]) -> None:
    """Within a symbol (= a partition), first deliveries of each sequence appear in increasing order."""
    seen: set[str] = set()
    last: dict[str, int] = {}
    for event in events:
        if event["event_id"] in seen:
            continue  # a redelivery: consumers drop it by event id
        seen.add(event["event_id"])
        symbol = event["symbol"]
        assert event["sequence"] > last.get(symbol, 0), f"out of order for {symbol}: {event['sequence']}"
        last[symbol] = event["sequence"]
