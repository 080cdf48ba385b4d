"""`guardian bench peers` on a tiny workload: the correctness check that keeps a fast peer that loses
rows from winning counts every row of a peer, and says so when rows are missing or doubled."""

from __future__ import annotations

from bench.peers.run import run_peers_bench, verdict
from guardian.settings import Settings


def test_a_peer_that_loses_or_doubles_rows_is_not_correct():
    assert verdict(100, 100, 100) == {"rows": 100, "lost": 0, "duplicated": 0, "correct": True}
    assert verdict(100, 98, 98)["lost"] == 2 and not verdict(100, 98, 98)["correct"]
    assert verdict(100, 103, 100)["duplicated"] == 3 and not verdict(100, 103, 100)["correct"]


def test_our_worker_peer_stores_every_event_once(settings: Settings):
    result = run_peers_bench(settings, events=500, rate=0, seconds=0, repeat=1, peers=("ours",))
    ours = result["runs"][0]["ours"]
    assert (ours["rows"], ours["lost"], ours["duplicated"], ours["correct"]) == (500, 0, 0, True)
    assert ours["events_per_s"] > 0 and ours["cpu_s_per_10k"] > 0
    assert result["summary"]["ours"]["all_correct"]
