"""The live feed: one capped Redis Stream of what an operator watching the dashboard should see at once.

`guardian:live` (LIVE_STREAM) holds two kinds of entries, newest last, trimmed with
`XADD ... MAXLEN ~ GUARDIAN_LIVE_STREAM_MAXLEN`:

- `type=breaker`: a circuit breaker changed state in the hot view. Written by the hot view's batch
  script (sinks/redis_hot_view.py) in the same atomic call as the `guardian:breaker:{symbol}` write, and
  only when the state it replaces differs. Fields: `symbol`, `from` (empty when the view had no state
  for the symbol), `to`, `event_time` (µs), `event_id`.
- `type=alert`: an alert changed state (fired or resolved), silenced ones included. Written by the alert
  publisher (stream_processors/alerts/outputs.py) in the pipeline that updates `guardian:alert:{fp}`.
  Fields: `fingerprint`, `rule`, `severity`, `status`, `symbol` (empty when the alert has none),
  `silenced` (`true`/`false`), `summary`, `at` (µs: the event time it fired or resolved at).

Readers (the API's SSE hub) XREAD from an entry id, so a client reconnecting with `Last-Event-ID` = that
id resumes where it left off, as long as the cap has not trimmed past it. The stream is a notification
feed, not a record: replays and hot view rebuilds write nothing to it, and the cap drops old entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypedDict

LIVE_STREAM = "guardian:live"
DEFAULT_MAXLEN = 10_000  # GUARDIAN_LIVE_STREAM_MAXLEN's default: hours of transitions at a busy fleet's rate

BREAKER = "breaker"
ALERT = "alert"
BREAKER_FIELDS = ("type", "symbol", "from", "to", "event_time", "event_id")
ALERT_FIELDS = ("type", "fingerprint", "rule", "severity", "status", "symbol", "silenced", "summary", "at")


# The functional form: `from` is a keyword in Python, and readers serialise these to JSON as they are.
BreakerEntry = TypedDict(
    "BreakerEntry",
    {"type": Literal["breaker"], "symbol": str, "from": str, "to": str, "event_time": int, "event_id": str},
)


class AlertEntry(TypedDict):
    type: Literal["alert"]
    fingerprint: str
    rule: str
    severity: str
    status: str
    symbol: str
    silenced: bool
    summary: str
    at: int


def alert_fields(alert: Mapping, silenced: bool, summary_max: int = 2_000) -> dict[str, str | int]:
    """The stream fields of one alert state change (`alert` is the engine's alert record)."""
    resolved = alert["status"] == "RESOLVED"
    return {
        "type": ALERT,
        "fingerprint": alert["fingerprint"],
        "rule": alert["rule"],
        "severity": alert["severity"],
        "status": alert["status"],
        "symbol": alert["labels"].get("symbol") or "",
        "silenced": "true" if silenced else "false",
        "summary": alert["summary"][:summary_max],
        "at": (alert["ends_at"] if resolved and alert["ends_at"] is not None else alert["starts_at"]) or 0,
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_entry(fields: Mapping[bytes | str, bytes | str]) -> BreakerEntry | AlertEntry | None:
    """One XREAD entry's fields as a typed dict; None for an entry of a type this version does not know
    (a newer writer may add types: readers skip them rather than fail)."""
    data = {_text(k): _text(v) for k, v in fields.items()}
    kind = data.get("type")
    if kind == BREAKER:
        return {"type": BREAKER, "symbol": data["symbol"], "from": data["from"], "to": data["to"],
                "event_time": int(data["event_time"]), "event_id": data["event_id"]}  # fmt: skip
    if kind == ALERT:
        return AlertEntry(type=ALERT, fingerprint=data["fingerprint"], rule=data["rule"],
                          severity=data["severity"], status=data["status"], symbol=data["symbol"],
                          silenced=data["silenced"] == "true", summary=data["summary"], at=int(data["at"]))  # fmt: skip
    return None
