"""The checkpoint record: round trips, checksums, and which checkpoint a reader picks."""

from __future__ import annotations

import pytest

from guardian.schemas.checkpoint import (
    COMPRESS_ABOVE,
    FLEET,
    HOST,
    CorruptCheckpointError,
    key_for,
    newest_valid,
    pack,
    unpack,
)


def test_json_bytes_and_large_bodies_round_trip():
    small = unpack(pack(HOST, "h1", {"w": [1, 2]}, checkpoint_id=5, offsets={3: 7}))
    assert (small.kind, small.owner, small.id, small.state, small.offsets) == (HOST, "h1", 5, {"w": [1, 2]}, {3: 7})
    assert unpack(pack(HOST, "h1", b"\x00opaque", checkpoint_id=1)).state == b"\x00opaque"
    assert unpack(pack(HOST, "h1", b'{"a":1}', checkpoint_id=1, serialized=True)).state == {"a": 1}
    big = {"latest": {f"S{i}:D": "x" * 100 for i in range(2000)}}
    packed = pack(FLEET, "g", big, checkpoint_id=9)
    assert len(packed) < COMPRESS_ABOVE  # compressed: the body is far larger
    assert unpack(packed).state == big


def test_a_flipped_bit_or_garbage_is_corrupt():
    record = bytearray(pack(FLEET, "g", {"n": 1}, checkpoint_id=1))
    record[-40] ^= 0x01  # in the body
    with pytest.raises(CorruptCheckpointError, match="SHA-256"):
        unpack(bytes(record))
    with pytest.raises(CorruptCheckpointError, match="does not decode"):
        unpack(b"not a checkpoint")


def test_the_newest_valid_checkpoint_of_the_owner_wins_and_skipped_ones_are_named():
    def record(checkpoint_id: int, slot: int, owner: str = "g", corrupt: bool = False) -> tuple[bytes, bytes]:
        value = bytearray(pack(FLEET, owner, {"id": checkpoint_id}, checkpoint_id=checkpoint_id))
        if corrupt:
            value[-40] ^= 0x01
        return key_for(FLEET, owner, slot), bytes(value)

    log = [record(1, 0), record(2, 1), record(3, 2), record(4, 0, corrupt=True), record(9, 1, owner="other")]
    chosen, problems = newest_valid(log, FLEET, "g")
    assert chosen is not None and chosen.id == 3  # slot 0's newest record is the corrupt 4; 1 is compacted away
    assert len(problems) == 1 and "FLEET/g/0" in problems[0]
    assert newest_valid(log, HOST, "g") == (None, [])
    only_corrupt, problems = newest_valid([record(5, 0, corrupt=True)], FLEET, "g")
    assert only_corrupt is None and len(problems) == 1
