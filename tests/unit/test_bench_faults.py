"""The fault bench's own arithmetic and table (the bench itself needs a stack of its own: `guardian bench faults`)."""

from __future__ import annotations

import subprocess

from bench.faults import HOW, NOT_PRODUCED, ROWS, _gaps, _plan, print_table
from tests.integration.helpers import GUARDIAN


def test_missing_spans_are_the_counts_without_a_row():
    assert _gaps([1, 2, 3], 3) == []
    assert _gaps([], 4) == [[1, 4]]
    assert _gaps([2, 3, 7], 8) == [[1, 1], [4, 6], [8, 8]]
    assert _gaps([1, 1, 2, 5], 5) == [[3, 4]]  # a duplicated row is not a gap


def test_every_row_says_how_it_is_produced_and_the_full_run_is_the_issue_s():
    assert set(HOW) == set(ROWS)
    assert NOT_PRODUCED["network_partition_between_hosts"].startswith("not produced")
    full, quick = _plan(False, None, 5000), _plan(True, None, 5000)
    assert (full.fault_s, full.kills, full.kill_every_s, full.fuzzed) == (60.0, 10, 20.0, 10_000)
    assert quick.fault_s < full.fault_s and quick.kills < full.kills


def test_the_table_shows_each_row_and_what_is_not_a_loss(capsys):
    rows = [
        {"fault": "producer_kill9_broker_down", "lost": 0, "duplicated_rows": 0, "hot_view_wrong_keys": 0,
         "alerts_missed": 0, "alerts_doubled": 0, "recovered_s": 12.5, "lost_unspooled_at_kill": 3},
        {"fault": "spool_disk_full", "lost": 0, "duplicated_rows": 0, "hot_view_wrong_keys": 0, "alerts_missed": 0,
         "alerts_doubled": 0, "recovered_s": None, "dropped_spool_full": 120, "settled": False, "final_lag": 9},
        {"fault": "broker_kill9", "error": "ClickException: boom"},
    ]  # fmt: skip
    print_table(rows)
    out = capsys.readouterr().out
    assert "3 unspooled at kill lost" in out and "120 refused (disk full)" in out
    assert "NOT SETTLED" in out and "ERROR: ClickException: boom" in out


def test_an_unknown_fault_is_refused_before_anything_starts():
    result = subprocess.run([GUARDIAN, "bench", "faults", "--only", "meteor"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2 and "unknown fault" in result.stderr
