"""What the API returns, typed, so `/openapi.json` documents every field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field


def from_micros(value: int | float) -> datetime:
    return datetime.fromtimestamp(int(value) / 1_000_000, UTC)


class Event(BaseModel):
    """One guardrail event, as PostgreSQL stores it and the hot view holds it."""

    event_id: str
    event_time: datetime
    producer_id: str
    sequence: int
    host: str
    symbol: str
    detector: str
    severity: str
    payload_type: str
    payload: dict[str, Any]
    kafka_partition: int | None = Field(None, description="Where it was read from (PostgreSQL rows only).")
    kafka_offset: int | None = None
    ingested_at: datetime | None = Field(None, description="When PostgreSQL stored it (PostgreSQL rows only).")

    @classmethod
    def from_row(cls, row: Any) -> Event:
        data = dict(row)
        payload = data["payload"]
        return cls(**{**data, "event_id": str(data["event_id"]),
                      "payload": orjson.loads(payload) if isinstance(payload, str | bytes) else payload})  # fmt: skip

    @classmethod
    def from_document(cls, raw: bytes | str | dict) -> Event:
        """From the hot view's JSON (event_time in microseconds)."""
        doc = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
        return cls(
            **{k: v for k, v in doc.items() if k in cls.model_fields} | {"event_time": from_micros(doc["event_time"])}
        )


class Breaker(BaseModel):
    symbol: str
    state: str
    since: datetime = Field(description="Event time of the transition into this state.")
    reason: str | None = None
    trip_count: int | None = None
    event: Event | None = None
