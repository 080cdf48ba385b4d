"""What a storable event is: the one rule set that `emit()` and the worker both apply.

Avro says what shape an event has; these rules say what every store downstream can hold.
An event that breaks one is a bug in whoever built it: `emit()` raises `InvalidEventError`
(a `SchemaMismatchError`, so a `ValueError`) naming the field, and the worker, which also
sees records from clients that never went through `emit()`, sends it to the dead-letter
topic with the rule's name in the `guardian.dlq.rule` header.

- `time_window`: `event_time` older than `max_event_age` (GUARDIAN_MAX_EVENT_AGE_HOURS) or further
  ahead than `max_future_skew` (GUARDIAN_MAX_FUTURE_SKEW_S) of the checking clock. PostgreSQL and
  Python's datetime hold years 1-9999 only, and a far-future time would keep alert conditions alive.
  The age limit is at least the events topic's retention, so a replay of the whole topic and a
  spool drained after a long outage pass.
- `uuid`: an `event_id` that is not a canonical UUID (8-4-4-4-12 hex): the history table's key is a
  `uuid` column (worker only: `emit()` makes the ids).
- `no_nul`: a NUL character in any string: PostgreSQL text cannot hold it.
- `max_length`: a string longer than its cap (`MAX_LENGTHS`, else `DEFAULT_MAX_LENGTH`): btree index
  rows are limited to ~2.7 KB, and alerts and dead letters carry these strings.
- `finite`: NaN or +/-infinity in a float: JSON (the history's payload column, the hot view) has no
  such numbers, and a NaN compares false with every alert threshold.

In `emit()` the checks cost ~0.3 µs an event: the payload's are generated per record
(`payload_checkers`, 0.15 µs), and the envelope strings a producer sets itself are checked once,
when it starts. The worker's full `EventRules.check` takes ~0.9 µs.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from guardian.schemas.codec import load_event_schema
from guardian.schemas.errors import SchemaMismatchError

MICROS_PER_S = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Characters, not bytes: a cap of 64 characters is at most 256 bytes of UTF-8.
MAX_LENGTHS: dict[str, int] = {
    "event_id": 36,
    "symbol": 64,
    "producer_id": 128,
    "host": 255,
    "reason": 4096,  # the breaker's free text
    "problems": 4096,  # a host restore's: what each source said
}
DEFAULT_MAX_LENGTH = 256  # every other string: metric, venue, order_path, ...
ENVELOPE_STRINGS = ("symbol", "producer_id", "host")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class InvalidEventError(SchemaMismatchError):
    """An event that matches the schema but breaks one of the storable-event rules."""

    def __init__(self, rule: str, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem} (rule {rule})")
        self.rule = rule
        self.field = field


def as_micros(value: int | datetime) -> int:
    """An event_time as the schema's int microseconds (callers may pass an aware datetime)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - EPOCH) // timedelta(microseconds=1)
    return value


def check_string(field: str, value: str) -> None:
    cap = MAX_LENGTHS.get(field, DEFAULT_MAX_LENGTH)
    if len(value) > cap:
        raise InvalidEventError("max_length", field, f"{len(value)} characters; at most {cap}")
    if "\x00" in value:
        raise InvalidEventError("no_nul", field, f"contains a NUL character at index {value.index(chr(0))}")


@dataclass(frozen=True, slots=True)
class EventRules:
    """The limits that depend on settings; `max_age_us` and `max_future_us` in microseconds."""

    max_age_us: int
    max_future_us: int
    # Generated checks per payload record (payload_checkers()); records not in it take check_payload().
    payload_checks: dict[str, Callable[[dict], None]] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def from_settings(cls, settings: object) -> EventRules:
        return cls(
            max_age_us=int(settings.max_event_age_hours * 3600 * MICROS_PER_S),  # type: ignore[attr-defined]
            max_future_us=int(settings.max_future_skew_s * MICROS_PER_S),  # type: ignore[attr-defined]
            payload_checks=payload_checkers(load_event_schema()),
        )

    def check_time(self, event_time: int, now_us: int | None = None) -> None:
        now_us = time.time_ns() // 1000 if now_us is None else now_us
        if event_time < now_us - self.max_age_us:
            raise InvalidEventError(
                "time_window", "event_time",
                f"{event_time} µs is {(now_us - event_time) / 3600e6:.1f} h old; at most "
                f"{self.max_age_us / 3600e6:g} h (GUARDIAN_MAX_EVENT_AGE_HOURS)",
            )  # fmt: skip
        if event_time > now_us + self.max_future_us:
            raise InvalidEventError(
                "time_window", "event_time",
                f"{event_time} µs is {(event_time - now_us) / 1e6:.1f} s ahead of this clock; at most "
                f"{self.max_future_us / 1e6:g} s (GUARDIAN_MAX_FUTURE_SKEW_S)",
            )  # fmt: skip

    def check(self, event: dict, now_us: int | None = None) -> None:
        """Every rule, on a decoded event (the worker's side)."""
        event_id = event["event_id"]
        if len(event_id) != 36 or _UUID.fullmatch(event_id) is None:
            raise InvalidEventError("uuid", "event_id", f"{event_id[:64]!r} is not a canonical UUID")
        for field in ENVELOPE_STRINGS:
            check_string(field, event[field])
        self.check_time(event["event_time"], now_us)
        name, payload = event["payload"]
        self.payload_checks.get(name, check_payload)(payload)


def payload_checkers(schema: dict) -> dict[str, Callable[[dict], None]]:
    """For each record of the schema's payload union (by full name), a function checking its strings
    and doubles, generated as straight-line code (as schemas/fast_writer.py does): emit() runs it on
    every event, after the codec has checked the types, and a loop over the fields cost twice as much."""
    checkers: dict[str, Callable[[dict], None]] = {}
    union = next(f["type"] for f in schema["fields"] if f["name"] == "payload")
    for record in union:
        lines = ["def check(payload):"]
        for field in record["fields"]:
            kind = field["type"]["type"] if isinstance(field["type"], dict) else field["type"]
            name = field["name"]
            if kind == "string":
                cap = MAX_LENGTHS.get(name, DEFAULT_MAX_LENGTH)
                lines += [f"    v = payload[{name!r}]", f"    if len(v) > {cap} or '\\x00' in v:",
                          f"        check_string({name!r}, v)"]  # fmt: skip
            elif kind == "double":
                lines += [f"    v = payload[{name!r}]", "    if v - v != 0.0:",  # NaN and inf give NaN
                          f"        refuse_non_finite({name!r}, v)"]  # fmt: skip
        lines.append("    return None")
        namespace: dict = {"check_string": check_string, "refuse_non_finite": _refuse_non_finite}
        exec("\n".join(lines), namespace)  # generated from the schema only: no outside input
        checkers[record["name"]] = namespace["check"]
    return checkers


def check_payload(payload: dict) -> None:
    """The payload's strings and floats, whatever its record (the worker's side; emit() uses
    payload_checkers())."""
    for field, value in payload.items():
        kind = type(value)
        if kind is str:
            if len(value) > MAX_LENGTHS.get(field, DEFAULT_MAX_LENGTH) or "\x00" in value:
                check_string(field, value)  # raises, naming the rule
        elif kind is float and value - value != 0.0:  # NaN - NaN and inf - inf are NaN
            _refuse_non_finite(field, value)


def _refuse_non_finite(field: str, value: float) -> None:
    raise InvalidEventError("finite", field, f"{value!r} is not a finite number")
