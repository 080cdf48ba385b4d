"""`guardian audit list`'s pure parts, the DLQ replay's offsets, the DSN's role and the audit's JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from guardian.audit_cli import list_query, status_text
from guardian.cli_kit import parse_time
from guardian.sinks.audit import json_ready
from guardian.sinks.roles import dsn_user
from guardian.stream_processors.dlq_tools import DeadLetter, offset_ranges

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1.5d", NOW - timedelta(hours=36)),
        ("1w", NOW - timedelta(days=7)),
        ("2026-02-28", datetime(2026, 2, 28, tzinfo=UTC)),
        ("2026-02-28T09:30", datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
        ("2026-02-28T09:30+02:00", datetime(2026, 2, 28, 7, 30, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_before_now_or_a_time_utc_by_default(text: str, expected: datetime):
    assert parse_time(text, NOW.timestamp()) == expected.timestamp()


@pytest.mark.parametrize("text", ["yesterday", "5x", "-1h", ""])
def test_a_bad_since_says_what_it_takes(text: str):
    with pytest.raises(click.BadParameter, match="a duration"):
        parse_time(text, NOW.timestamp())


def test_the_list_query_numbers_only_the_filters_given():
    query, args = list_query(None, None, None, 50)
    assert "WHERE" not in query and query.endswith("LIMIT $1") and args == [50]
    query, args = list_query(NOW, None, "replay", 10)
    assert "at >= $1 AND strpos(action, $2) > 0" in query and query.endswith("LIMIT $3")
    assert args == [NOW, "replay", 10]


def test_status_reads_as_ok_failed_or_the_http_code():
    assert status_text(0, "dlq replay") == "ok"
    assert status_text(1, "stack init") == "FAILED"
    assert status_text(200, "GET /v1/events") == "200"
    assert status_text(None, "x") == "-"


def test_a_replays_offsets_are_a_range_per_partition():
    letters = [DeadLetter(p, o, None, b"", {}) for p, o in [(0, 5), (1, 2), (0, 3), (0, 9)]]
    assert offset_ranges(letters) == {"0": [3, 9], "1": [2, 2]}
    assert offset_ranges([]) == {}


def test_the_application_role_is_the_dsns_user():
    assert dsn_user("postgresql://guardian_app@127.0.0.1:15432/guardian") == ("guardian_app", None)
    assert dsn_user("postgresql://app:p%40ss@db/guardian") == ("app", "p@ss")
    assert dsn_user("postgresql://db/guardian") == (None, None)


def test_any_detail_becomes_json_jsonb_takes():
    detail = {"plan": {3: [10, 20]}, "rate": float("nan"), "pair": (1, float("inf")), "at": {None: 1}}
    assert json_ready(detail) == {"plan": {"3": [10, 20]}, "rate": None, "pair": [1, None], "at": {"None": 1}}
