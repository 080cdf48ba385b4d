"""The disk spool: order, acks, segments, bounds and crash recovery (pure file logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardian.producers.spool import STANDBY_NAME, FullPolicy, Spool


def fill(spool: Spool, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        assert spool.append(f"S{i % 3}".encode(), f"value-{i}".encode())


def drain_all(spool: Spool) -> list[bytes]:
    out = []
    while batch := spool.read_batch(7):
        for segment, _key, value in batch:
            out.append(value)
            spool.ack(segment)
    return out


def test_records_come_back_in_order_and_acked_segments_are_deleted(tmp_path):
    spool = Spool(tmp_path, segment_bytes=200)
    fill(spool, 50)
    assert len(list(tmp_path.glob("*.seg"))) > 3  # rolled
    assert drain_all(spool) == [f"value-{i}".encode() for i in range(50)]
    assert spool.pending_records() == 0
    assert list(tmp_path.glob("*.seg")) == []


def test_a_segment_stays_until_every_record_in_it_is_acked(tmp_path):
    spool = Spool(tmp_path, segment_bytes=10_000)
    fill(spool, 10)
    batch = spool.read_batch(10)
    for segment, _, _ in batch[:9]:
        spool.ack(segment)
    assert len(list(tmp_path.glob("*.seg"))) == 1
    assert spool.pending_records() == 1
    spool.ack(batch[9][0])
    assert list(tmp_path.glob("*.seg")) == []


def test_reopen_after_crash_delivers_everything_not_acked(tmp_path):
    spool = Spool(tmp_path, segment_bytes=300)
    fill(spool, 30)
    for segment, _, _ in spool.read_batch(5):
        spool.ack(segment)
    # No close(): the process "dies" here. A new process opens the same directory.
    reopened = Spool(tmp_path, segment_bytes=300)
    values = drain_all(reopened)
    # Acks are not persisted, so a partly acked segment is redelivered whole (at-least-once,
    # deduplicated downstream by event id): nothing unacked is missing and the order holds.
    numbers = [int(v.split(b"-")[1]) for v in values]
    assert numbers == list(range(numbers[0], 30))
    assert numbers[0] <= 5
    assert reopened.stats.recovered_records == len(values)


def test_torn_last_record_is_cut_and_reported_not_replayed(tmp_path):
    spool = Spool(tmp_path)
    fill(spool, 5)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])  # the last record was half-written when the process died
    reopened = Spool(tmp_path)
    assert reopened.stats.torn_records == 1
    assert drain_all(reopened) == [f"value-{i}".encode() for i in range(4)]


def test_corrupted_crc_is_detected(tmp_path):
    spool = Spool(tmp_path)
    fill(spool, 3)
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # flip a bit in the last record's body
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    assert reopened.stats.torn_records == 1
    assert drain_all(reopened) == [b"value-0", b"value-1"]


def test_full_spool_drops_newest_and_counts_it(tmp_path):
    spool = Spool(tmp_path, max_bytes=200)
    accepted = sum(spool.append(b"K", b"x" * 20) for _ in range(20))
    assert 0 < accepted < 20
    assert spool.stats.dropped == 20 - accepted
    assert spool.snapshot().bytes <= 200


def test_overflow_policy_keeps_everything_and_counts_the_excess(tmp_path):
    spool = Spool(tmp_path, max_bytes=200, full_policy=FullPolicy.OVERFLOW)
    assert all(spool.append(b"K", b"x" * 20) for _ in range(20))
    assert spool.stats.dropped == 0
    assert spool.stats.overflowed_bytes > 0


def test_rewind_hands_out_unacked_records_again(tmp_path):
    spool = Spool(tmp_path)
    fill(spool, 4)
    first = spool.read_batch(4)
    spool.rewind()
    again = spool.read_batch(4)
    assert [v for _, _, v in again] == [v for _, _, v in first]


@pytest.mark.parametrize("every", [1, 3])
def test_fsync_every_n_records(tmp_path, every):
    spool = Spool(tmp_path, fsync_every_records=every)
    fill(spool, 6)
    assert spool._unsynced < every


# -- a maintained spool: the owner's background thread does the file work --------------------------
def test_maintained_spool_writes_into_the_segment_prepared_ahead(tmp_path):
    spool = Spool(tmp_path, segment_bytes=4096, maintained=True)
    spool.maintain()
    standby = tmp_path / STANDBY_NAME
    assert standby.stat().st_size == 4096  # allocated before any record needs it
    standby_inode = standby.stat().st_ino
    fill(spool, 1)
    (segment,) = tmp_path.glob("*.seg")
    assert not standby.exists() and segment.stat().st_ino == standby_inode  # renamed, not created
    spool.maintain()
    assert standby.exists()  # the next one is ready again
    fill(spool, 999, start=1)  # rolls over several times; retired segments wait for maintain()
    spool.maintain()
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 3
    # A retired segment was closed: cut to its records, no zeroed tail left.
    assert all(path.stat().st_size < 4096 for path in segments[:-1])
    spool.close()
    assert not standby.exists()
    assert drain_all(Spool(tmp_path, segment_bytes=4096)) == [f"value-{i}".encode() for i in range(1000)]


def _resident_kb(path) -> int:
    """Rss of this process's mapping of `path`, from /proc/self/smaps."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            return next(int(x.split()[1]) for x in lines[i + 1 :] if x.startswith("Rss:"))
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_maintain_unmaps_the_pages_appends_filled_and_they_still_read_back(tmp_path):
    spool = Spool(tmp_path, segment_bytes=4 * 1024 * 1024, maintained=True)
    fill(spool, 20_000)  # ~400 KB written
    (segment,) = tmp_path.glob("*.seg")
    before = _resident_kb(segment)  # the whole segment is faulted in when it is made
    spool.maintain()
    assert before - _resident_kb(segment) >= 300  # the pages written, but for the one being filled
    fill(spool, 20_000, start=20_000)  # appends go on after it, and pages before it read back
    spool.maintain()
    assert drain_all(spool) == [f"value-{i}".encode() for i in range(40_000)]
    spool.close()


def test_a_prepared_segment_is_removed_at_start_unless_it_holds_records(tmp_path):
    spool = Spool(tmp_path, segment_bytes=4096, maintained=True)
    spool.maintain()  # prepared, then the process dies
    assert Spool(tmp_path).pending_records() == 0
    assert not (tmp_path / STANDBY_NAME).exists()
    # A power loss can lose the rename that made the prepared file a segment: its records still count.
    spool = Spool(tmp_path, segment_bytes=4096, maintained=True)
    fill(spool, 3)
    (segment,) = tmp_path.glob("*.seg")
    segment.rename(tmp_path / STANDBY_NAME)
    recovered = Spool(tmp_path)
    assert drain_all(recovered) == [f"value-{i}".encode() for i in range(3)]


def test_a_segment_that_cannot_be_allocated_leaves_no_file_to_block_the_next_try(tmp_path):
    spool = Spool(tmp_path, segment_bytes=1 << 50, maintained=True)  # far more than any disk here
    for _ in range(2):  # the second try gets the same error, not "file exists"
        with pytest.raises(OSError) as failure:
            spool.maintain()
        assert not isinstance(failure.value, FileExistsError)
        assert not (tmp_path / STANDBY_NAME).exists()


@pytest.mark.parametrize("maintained", [False, True])
def test_records_returned_to_the_front_drain_before_the_spooled_ones(tmp_path, maintained):
    """The producer's undelivered events come back after newer ones were spooled; they are older."""
    spool = Spool(tmp_path, segment_bytes=200, maintained=maintained)
    if maintained:
        spool.maintain()
    fill(spool, 20, start=100)  # spooled while older events 0..9 waited in librdkafka's queue
    for i in range(10):
        assert spool.append_front(f"S{i % 3}".encode(), f"value-{i}".encode())
    fill(spool, 5, start=120)
    expected = [f"value-{i}".encode() for i in [*range(10), *range(100, 125)]]
    spool.close()
    # A new process finds them on disk in the same order.
    assert drain_all(Spool(tmp_path, segment_bytes=200)) == expected
    assert list(tmp_path.glob("*.seg")) == []


def test_each_spooling_episode_leaves_room_for_its_front(tmp_path):
    spool = Spool(tmp_path, segment_bytes=200)
    for episode in range(3):
        fill(spool, 12, start=100)  # two segments
        assert spool.append_front(b"S0", b"returned")
        assert drain_all(spool)[0] == b"returned", episode
        assert spool.pending_records() == 0
    # The front of a spool that only ever had returned records, then a tail after it.
    assert spool.append_front(b"S0", b"first")
    fill(spool, 3)
    assert drain_all(spool) == [b"first", b"value-0", b"value-1", b"value-2"]


def test_front_records_count_against_the_bound(tmp_path):
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.append_front(b"K", b"x" * 60)
    assert not spool.append_front(b"K", b"x" * 60)
    assert spool.snapshot().dropped == 1
