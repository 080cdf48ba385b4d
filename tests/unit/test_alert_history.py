"""Alert history's pure logic: the notification key, receiver redaction, the change row of an AlertEvent
(old records without the new fields too), the AlertEvent round trip, and the notification log's overflow."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime

import fastavro
import pytest

from guardian.schemas.codec import RELEASED_DIR, SINGLE_OBJECT_MAGIC, EventCodec, load_alert_schema, schema_fingerprint
from guardian.sinks.alert_history import Attempt, change_row, notification_key, redact_receiver
from guardian.stream_processors import metrics
from guardian.stream_processors.alerts.engine import Notification
from guardian.stream_processors.alerts.history import NotificationLog
from guardian.stream_processors.alerts.outputs import alert_event, alert_key

ALERT = {
    "fingerprint": "0123456789abcdef", "rule": "circuit-breaker-open", "severity": "P0", "status": "FIRING",
    "labels": {"symbol": "AAPL"}, "summary": "breaker OPEN", "starts_at": 1_700_000_000_000_000, "ends_at": None,
    "event_id": "6f1c1c43-56a4-4c4e-9d4c-1f1f2f1e3a10", "event_time": 1_700_000_000_000_000, "partition": 3,
    "last_notified_us": 1_700_000_000_250_000,
}  # fmt: skip


def test_the_notification_key_is_stable_and_tells_transitions_apart():
    key = notification_key("fp", "FIRING", 1, 2)
    assert key == notification_key("fp", "FIRING", 1, 2) and len(key) == 32
    others = {notification_key("fp", "RESOLVED", 1, 2), notification_key("fp", "FIRING", 1, 3),  # a repeat
              notification_key("fp2", "FIRING", 1, 2), notification_key("fp", "FIRING", 1, None)}  # fmt: skip
    assert key not in others and len(others) == 4
    assert alert_key(ALERT) == notification_key(ALERT["fingerprint"], "FIRING", ALERT["starts_at"],
                                                ALERT["last_notified_us"])  # fmt: skip


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://hooks.slack.com/services/T00/B00/XXXX", "https://hooks.slack.com"),
        ("http://user:pa55@alerts.internal:9093/api/v2/alerts?token=abc#x", "http://alerts.internal:9093"),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("HTTPS://Example.COM/p", "https://example.com"),
        ("not a url", "invalid-url"),
        ("http://host:notaport/x", "invalid-url"),
    ],
)
def test_a_receiver_is_stored_as_scheme_host_and_port_only(url, stored):
    assert redact_receiver(url) == stored


def test_the_change_row_of_an_alert_event_carries_the_new_fields():
    record = alert_event(ALERT, repeat=True, silenced=True)
    row = change_row(record, partition=2, offset=41)
    columns = dict(zip(("change_key", "at", "fingerprint", "rule", "severity", "status", "symbol", "labels",
                        "summary", "starts_at", "ends_at", "event_id", "event_time", "notified_at", "repeat",
                        "silenced", "kafka_partition", "kafka_offset"), row, strict=True))  # fmt: skip
    assert columns["change_key"] == alert_key(ALERT)
    assert columns["at"] == columns["notified_at"] == datetime(2023, 11, 14, 22, 13, 20, 250_000, tzinfo=UTC)
    assert str(columns["event_id"]) == ALERT["event_id"] and columns["event_time"] == columns["starts_at"]
    assert (columns["repeat"], columns["silenced"], columns["kafka_partition"], columns["kafka_offset"]) == (
        True, True, 2, 41,
    )  # fmt: skip
    assert json.loads(columns["labels"]) == {"symbol": "AAPL"}


def test_a_record_written_before_the_new_fields_is_read_and_keyed_by_its_own_times():
    """A v1 AlertEvent (no event_time, notified_at, repeat, silenced) decodes with defaults; a RESOLVED
    one is placed at its end time."""
    v1 = fastavro.parse_schema(json.loads((RELEASED_DIR / "alert_event.v1.avsc").read_text()))
    old = {k: v for k, v in alert_event(ALERT).items() if k not in ("event_time", "notified_at", "repeat", "silenced")}
    old.update(status="RESOLVED", ends_at=ALERT["starts_at"] + 5_000_000)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1, old)
    decoded = EventCodec(load_alert_schema()).decode(SINGLE_OBJECT_MAGIC + schema_fingerprint(v1) + body.getvalue())
    assert (decoded["notified_at"], decoded["event_time"], decoded["repeat"], decoded["silenced"]) == (
        None, None, False, False,
    )  # fmt: skip
    row = change_row(decoded, 0, 0)
    assert row[0] == notification_key(ALERT["fingerprint"], "RESOLVED", ALERT["starts_at"], None)
    assert row[1] == datetime(2023, 11, 14, 22, 13, 25, tzinfo=UTC)  # ends_at


def test_the_alert_event_round_trips_with_the_new_fields():
    codec = EventCodec(load_alert_schema())
    record = alert_event(ALERT, repeat=True, silenced=False)
    assert codec.decode(codec.encode(record)) == record


def test_alert_state_written_before_event_time_existed_still_publishes():
    legacy = {k: v for k, v in ALERT.items() if k != "event_time"}
    assert alert_event(legacy)["event_time"] is None


def test_a_full_notification_log_drops_and_counts_instead_of_waiting():
    async def run() -> None:
        log = NotificationLog("postgresql://unused", max_queued=2)
        now = datetime.now(UTC)
        attempt = Attempt("k", "fp", "AAPL", "r", "FIRING", "redis", "guardian:alerts", 1, "delivered", now)
        before = metrics.NOTIFICATION_ROWS.labels("overflow")._value.get()
        for _ in range(5):
            log.record(attempt)  # returns at once, full or not
        assert log.queue.qsize() == 2
        assert metrics.NOTIFICATION_ROWS.labels("overflow")._value.get() - before == 3

    asyncio.run(run())


def test_notification_rows_name_the_alert():
    from guardian.stream_processors.alerts.outputs import attempt_row

    at = datetime.now(UTC)
    row = attempt_row(Notification(ALERT), "webhook", "http://h:1", 2, "retried", at, http_status=503, error="HTTP 503")
    assert (row.notification_key, row.fingerprint, row.symbol, row.rule, row.status) == (
        alert_key(ALERT), ALERT["fingerprint"], "AAPL", ALERT["rule"], "FIRING",
    )  # fmt: skip
    assert (row.channel, row.attempt, row.outcome, row.http_status) == ("webhook", 2, "retried", 503)
