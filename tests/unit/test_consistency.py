"""Pure logic of replay and verification: times as typed, the ledger's gaps, key comparison, repair ranges."""

from __future__ import annotations

import click
import orjson
import pytest

from guardian.cli_kit import parse_duration, parse_time
from guardian.stream_processors.consistency.hot_view import ABSENT, CORRUPT, STALE, compare
from guardian.stream_processors.consistency.kafka_pg import DecodedRecord
from guardian.stream_processors.consistency.ledger import _split
from guardian.stream_processors.consistency.repair import spans
from guardian.stream_processors.replay.offsets import ResetRow

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
                                               ("1h30m", 5400), ("0.5h", 1800)])  # fmt: skip
def test_durations(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10", "10x", "-5m", "1h-", "0s"])
def test_bad_durations_are_refused_with_the_form_to_use(text: str):
    with pytest.raises(click.BadParameter, match="a duration is a number and s, m, h, d or w"):
        parse_duration(text)


def test_times_are_iso_utc_now_or_a_duration_ago():
    assert parse_time("now", NOW) == NOW
    assert parse_time("2h", NOW) == NOW - 7200
    assert parse_time("2027-01-15T08:00:00Z", NOW) == parse_time("2027-01-15T08:00:00", NOW)  # no zone: UTC
    assert parse_time("2027-01-15T09:00:00+01:00", NOW) == parse_time("2027-01-15T08:00:00Z", NOW)
    with pytest.raises(click.BadParameter, match="ISO 8601"):
        parse_time("yesterday", NOW)


def test_a_gap_is_lost_unless_the_other_checks_account_for_it():
    assert _split("p", 5, 9, {}) == [("lost", (5, 9))]
    accounted = {("p", 6): "missing_rows", ("p", 7): "missing_rows", ("p", 9): "dead_lettered", ("q", 5): "x"}
    assert _split("p", 5, 9, accounted) == [
        ("lost", (5, 5)), ("missing_rows", (6, 7)), ("lost", (8, 8)), ("dead_lettered", (9, 9)),
    ]  # fmt: skip


def _doc(event_id: str, sequence: int, event_time: int, producer: str = "p") -> dict:
    return {"event_id": event_id, "producer_id": producer, "sequence": sequence, "event_time": event_time,
            "payload": {"metric": "m"}}  # fmt: skip


def test_a_key_may_be_newer_than_the_row_read_but_never_older():
    expected = _doc("b", 10, 1000)
    assert compare("k", None, orjson.dumps(expected), expected) is None
    assert compare("k", None, orjson.dumps(_doc("c", 11, 1001)), expected) is None  # in flight: fine
    assert compare("k", None, orjson.dumps(_doc("a", 9, 999)), expected).kind == STALE
    assert compare("k", None, orjson.dumps(_doc("x", 3, 2000, "q")), expected) is None  # another producer, later
    assert compare("k", None, orjson.dumps(_doc("x", 99, 10, "q")), expected).kind == STALE  # ... earlier
    assert compare("k", None, None, expected).kind == ABSENT
    assert compare("k", None, b"\x00garbage", expected).kind == CORRUPT
    assert compare("k", None, orjson.dumps({**expected, "payload": {"metric": "n"}}), expected).kind == CORRUPT
    # The event's id as its producer wrote it (upper-case hex digits) against PostgreSQL's lower-case uuid.
    uuid = "f70d40c3-f48a-49a7-84e0-947b824de7f2"
    written = orjson.dumps({**expected, "event_id": uuid.upper()})
    assert compare("k", None, written, {**expected, "event_id": uuid}) is None


def test_repair_ranges_cover_the_missing_offsets_in_runs():
    records = [DecodedRecord(1, 5), DecodedRecord(0, 3), DecodedRecord(0, 4), DecodedRecord(0, 9), DecodedRecord(1, 6)]
    assert spans(records) == {0: [(3, 5), (9, 10)], 1: [(5, 7)]}


def test_a_reset_plan_says_what_the_fleet_reads_again():
    assert ResetRow(0, current=500, target=100).reread == 400
    assert ResetRow(1, current=100, target=500).reread == -400  # skips
    assert ResetRow(2, current=None, target=0).reread is None  # never committed


def test_a_lost_span_that_turns_up_leaves_the_count_of_its_minute():
    from datetime import UTC, datetime

    from guardian.stream_processors.consistency.ledger import Ledger, MinuteLine

    line = MinuteLine("p", datetime(2026, 11, 30, 8, 0, tzinfo=UTC), rows=10, duplicates=0, lost=5)
    book = Ledger([line], {"p": [(3, 4), (8, 10)]}, {("p", 3, 4): line, ("p", 8, 10): line})
    book.found_after_all("p", (8, 10))
    assert (line.lost, book.lost_spans) == (2, {"p": [(3, 4)]})
    book.found_after_all("p", (3, 4))
    assert (line.lost, book.lost_spans, book.totals()["p"]["lost"]) == (0, {}, 0)


def test_a_lost_span_has_arrived_only_when_every_number_of_it_is_stored():
    from guardian.stream_processors.consistency.verify import arrived

    spans = [(3, 4), (8, 10), (12, 12), (20, 21)]
    stored = [1, 3, 4, 8, 10, 12, 21, 30]  # 9 and 20 still missing
    assert arrived(spans, stored) == [(3, 4), (12, 12)]
    assert arrived(spans, []) == []
