"""Which spools a starting producer adopts: only stopped producers' spools with events, for its topic."""

from __future__ import annotations

from pathlib import Path

from guardian.producers.orphans import TOPIC_FILE, claim_orphans, lock_spool
from guardian.producers.spool import Spool


def spool_with_events(root: Path, name: str, topic: str | None, events: int = 3) -> Path:
    directory = root / name
    lock_spool(directory).close()  # made by a producer that has stopped: its lock is free
    if topic is not None:
        (directory / TOPIC_FILE).write_text(topic)
    spool = Spool(directory)
    for i in range(events):
        spool.append(b"S0", b"event %d" % i)
    spool.close()
    return directory


def test_only_stopped_producers_spools_with_events_for_the_same_topic_are_claimed(tmp_path):
    own = spool_with_events(tmp_path, "me", "events")
    gone = spool_with_events(tmp_path, "gone", "events")
    legacy = spool_with_events(tmp_path, "legacy", None)  # written before spools named their topic
    spool_with_events(tmp_path, "other-topic", "elsewhere")
    spool_with_events(tmp_path, "empty", "events", events=0)
    running = spool_with_events(tmp_path, "running", "events")
    held = lock_spool(running)
    try:
        claimed = claim_orphans(tmp_path, own, "events")
        assert [directory for directory, _ in claimed] == [gone, legacy]
        assert claim_orphans(tmp_path, own, "events") == []  # claimed ones stay locked: adopted once
    finally:
        held.close()
        for _, handle in claimed:
            handle.close()


def test_no_spool_directory_yet_claims_nothing(tmp_path):
    assert claim_orphans(tmp_path / "absent", tmp_path / "absent" / "me", "events") == []
