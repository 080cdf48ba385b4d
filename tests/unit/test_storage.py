"""The storage module's pure logic: the mode rule, the policy, job health, what upkeep reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from guardian.settings import Settings
from guardian.sinks.storage import (
    NATIVE,
    TIMESCALEDB,
    JobHealth,
    StoragePolicy,
    _collapse_created,
    _parse_timedelta,
    _say,
    mode_rule,
)


@pytest.mark.parametrize(
    ("installed", "preload", "mode"),
    [
        (True, "timescaledb", TIMESCALEDB),
        (True, "pg_stat_statements, timescaledb", TIMESCALEDB),
        (True, "pg_stat_statements,timescaledb", TIMESCALEDB),
        (True, "$libdir/timescaledb", TIMESCALEDB),
        (True, "'timescaledb'", TIMESCALEDB),
        (True, "", NATIVE),  # installed, not preloaded: CREATE EXTENSION would fail
        (True, "timescaledb_toolkit", NATIVE),
        (False, "timescaledb", NATIVE),  # preloaded, files gone
        (False, "", NATIVE),
    ],
)
def test_timescaledb_mode_needs_the_extension_installed_and_preloaded(installed, preload, mode):
    assert mode_rule(installed, preload) == mode


def test_policy_comes_from_the_settings():
    policy = StoragePolicy.from_settings(Settings(retention_days=3, chunk_hours=6, compress_after_hours=12))
    assert policy == StoragePolicy(timedelta(days=3), timedelta(hours=6), timedelta(hours=12))
    assert policy.ahead == timedelta(days=1)  # at least a day of partitions ahead...
    assert StoragePolicy(timedelta(days=9), timedelta(days=2), timedelta(days=1)).ahead == timedelta(
        days=4
    )  # ...2 chunks


@pytest.mark.parametrize("value", [timedelta(hours=1), timedelta(days=7), timedelta(days=1, hours=2), timedelta(0)])
def test_recorded_intervals_read_back(value):
    assert _parse_timedelta(str(value)) == value


def test_intervals_are_said_in_days_or_hours():
    assert [_say(timedelta(hours=1)), _say(timedelta(hours=6)), _say(timedelta(days=1)), _say(None)] == [
        "1 hour", "6 hours", "1 day", "none",
    ]  # fmt: skip


def test_a_job_fails_until_a_later_success():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    later = t0 + timedelta(hours=1)
    assert not JobHealth("j", t0, None, None).failing
    assert JobHealth("j", None, t0, "boom").failing
    assert JobHealth("j", t0, later, "boom").failing
    assert not JobHealth("j", later, t0, "boom").failing  # failed once, succeeded since
    text = JobHealth("j", t0, later, "boom").describe(later + timedelta(seconds=30))
    assert text == "j: last success 60 min ago, FAILING since 30 s ago: boom"


def test_a_first_run_reports_its_partitions_in_one_line():
    many = [f"created p{i}" for i in range(5)]
    assert _collapse_created(["pruned 3 rows", *many]) == ["pruned 3 rows", "created 5 partitions: p0 .. p4"]
    assert _collapse_created(many[:2]) == many[:2]
