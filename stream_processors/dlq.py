"""Dead-letter records: raw bytes + headers naming why, where from and when (Kafka Connect style)."""

from __future__ import annotations

from datetime import UTC, datetime

HEADER_PREFIX = "guardian.dlq."


def dlq_headers(error: Exception, topic: str, partition: int, offset: int, **extra: str) -> list[tuple[str, bytes]]:
    """Kafka Connect's DLQ headers; `extra` adds more (`rule`, `field` for a broken storable-event
    rule, `stage` for a row a store refused)."""
    return [
        *((f"{HEADER_PREFIX}{name}", value.encode()[:2000]) for name, value in extra.items()),
        (f"{HEADER_PREFIX}error.class", type(error).__name__.encode()),
        (f"{HEADER_PREFIX}error.message", str(error).encode()[:2000]),
        (f"{HEADER_PREFIX}source.topic", topic.encode()),
        (f"{HEADER_PREFIX}source.partition", str(partition).encode()),
        (f"{HEADER_PREFIX}source.offset", str(offset).encode()),
        (f"{HEADER_PREFIX}failed.at", datetime.now(UTC).isoformat().encode()),
    ]


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {
        key.removeprefix(HEADER_PREFIX): (value or b"").decode(errors="replace")
        for key, value in headers or []
        if key.startswith(HEADER_PREFIX)
    }
