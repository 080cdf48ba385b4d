"""The event model in one place: the detectors, their payload types, and an event as the worker holds it.

`avro/guardian_event.avsc` is the contract; the names here mirror it (tests/unit/test_events.py
checks them against the schema), so code compares with these instead of spelling strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Detector(StrEnum):
    """The guardrail that emitted the event (the schema's `detector` enum)."""

    LATENCY_SPIKE = "LATENCY_SPIKE_DETECTOR"
    DRIFT = "DRIFT_MONITOR"
    CIRCUIT_BREAKER = "CIRCUIT_BREAKER"
    TRADING_HOST = "TRADING_HOST"  # the host itself: its restore at start


class Payload(StrEnum):
    """Full names of the payload records (the branches of the schema's `payload` union), as decoded."""

    LATENCY_SPIKE = "io.guardian.events.LatencySpike"
    DRIFT = "io.guardian.events.Drift"
    CIRCUIT_BREAKER = "io.guardian.events.CircuitBreakerTransition"
    HOST_RESTORE = "io.guardian.events.HostRestore"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A decoded event with where it came from, as the stores and the alert engine need it (the raw
    record and key for the DLQ)."""

    event: dict
    partition: int
    offset: int
    raw: bytes = b""
    key: bytes | None = None


def event_document(event: dict) -> dict:
    """An event as the hot view stores it and a restore returns it: the envelope, `payload_type` (the
    record's short name) and `payload` as a plain dict."""
    payload_name, payload = event["payload"]
    return {**event, "payload_type": payload_name.rsplit(".", 1)[-1], "payload": payload}
