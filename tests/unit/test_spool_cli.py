"""`guardian spool inspect`: a read-only summary of what producers' spools hold."""

from __future__ import annotations

import fcntl

from click.testing import CliRunner

from guardian.producers.cli import spool as spool_cli
from guardian.producers.spool import Spool
from guardian.schemas.codec import EventCodec

T0 = 1_764_169_200_000_000  # 2025-11-26T15:00:00Z in µs


def event(sequence: int, symbol: str, reason: str = "") -> dict:
    return {
        "event_id": f"00000000-0000-8000-8000-{sequence:012x}", "producer_id": "p", "sequence": sequence,
        "host": "h", "symbol": symbol, "detector": "CIRCUIT_BREAKER", "event_time": T0 + sequence * 1000,
        "severity": "CRITICAL", "schema_version": 1,
        "payload": ("io.guardian.events.CircuitBreakerTransition", {
            "from_state": "CLOSED", "to_state": "OPEN", "reason": reason, "trip_count": 1, "cooldown_seconds": 0,
        }),
    }  # fmt: skip


def make_spool(directory, codec: EventCodec) -> None:
    spool = Spool(directory, segment_bytes=2000)
    (directory / "LOCK").touch()
    for sequence in range(3, 30):  # several segments
        spool.append(f"S{sequence % 4}".encode(), codec.encode(event(sequence, f"S{sequence % 4}")))
    for sequence in (1, 2):  # returned undelivered: older, at the front
        spool.append_front(b"S0", codec.encode(event(sequence, "S0")))
    spool.close()
    (directory / "rejected").mkdir()
    (directory / "rejected" / "1.avro").write_bytes(codec.encode(event(99, "BIG", reason="x" * 5000)))


def test_inspect_summarises_events_symbols_times_and_rejected_events_without_changing_a_file(tmp_path):
    codec = EventCodec()
    make_spool(tmp_path / "host-1", codec)
    segment = sorted((tmp_path / "host-1").glob("*.seg"))[-1]
    with open(segment, "ab") as handle:
        handle.write(b"\x00\x00\x00\x09torn")  # a torn tail, as a crash leaves it: the next producer cuts it
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}

    result = CliRunner().invoke(spool_cli, ["inspect", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert f"spool {tmp_path / 'host-1'} (not in use)" in result.output
    assert "29 event(s) in " in result.output and "4 symbol(s)" in result.output
    # Drain order: the front records (sequences 1, 2) first, the newest (29) last.
    assert "event times 2025-11-26T15:00:00.001+00:00 .. 2025-11-26T15:00:00.029+00:00" in result.output
    assert "rejected by Kafka for good, kept: 1.avro: event 00000000-0000-8000-8000-000000000063, BIG" in result.output
    assert before == {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}


def test_inspect_tells_a_spool_a_running_producer_holds(tmp_path):
    codec = EventCodec()
    make_spool(tmp_path, codec)
    with open(tmp_path / "LOCK", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running GuardianProducer holds
        result = CliRunner().invoke(spool_cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "(in use by a running producer)" in result.output


def test_inspect_of_a_folder_without_spools_says_so(tmp_path):
    result = CliRunner().invoke(spool_cli, ["inspect", str(tmp_path)])
    assert result.exit_code != 0
    assert "holds no producer spool" in result.output
