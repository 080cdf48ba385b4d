"""`guardian spool`: what a trading host's disk spool holds, for the people who run the host."""

from __future__ import annotations

import fcntl
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click

from guardian.settings import get_settings
from producers.producer import LOCK_FILE, REJECTED_DIR
from producers.spool import read_spool
from schemas.codec import EventCodec
from schemas.errors import CodecError


@click.group()
def spool() -> None:
    """Inspect producers' disk spools (events waiting for Kafka, events Kafka refused)."""


@spool.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
def inspect(directory: Path | None) -> None:
    """Summarise each spool under DIRECTORY (default: GUARDIAN_SPOOL_DIR), read-only.

    DIRECTORY may be one producer's spool or the folder that holds several."""
    root = directory or get_settings().spool_dir
    if not root.is_dir():
        raise click.ClickException(f"no spool at {root} (GUARDIAN_SPOOL_DIR): no producer has spooled there")
    spools = [root] if (root / LOCK_FILE).exists() else sorted(p for p in root.iterdir() if (p / LOCK_FILE).exists())
    if not spools:
        raise click.ClickException(f"{root} holds no producer spool (no LOCK file in it or its sub-folders)")
    codec = EventCodec()
    for path in spools:
        click.echo(_describe(path, codec))


def _describe(directory: Path, codec: EventCodec) -> str:
    records = segments = size = 0
    symbols: Counter[bytes] = Counter()
    first = last = b""
    seen: set[Path] = set()
    for segment, key, value in read_spool(directory):
        if segment not in seen:
            seen.add(segment)
            segments, size = segments + 1, size + segment.stat().st_size
        records += 1
        symbols[key] += 1
        first = first or value
        last = value
    state = "in use by a running producer" if _in_use(directory) else "not in use"
    lines = [f"spool {directory} ({state})"]
    if records:
        lines.append(
            f"  {records} event(s) in {segments} segment file(s), {_size(size)} on disk,"
            f" {len(symbols)} symbol(s); event times {_event_time(codec, first)} .. {_event_time(codec, last)}"
        )
        lines.append("  the next producer with this spool sends them first; a running one may have sent some already")
    else:
        lines.append("  no events waiting")
    for path in sorted((directory / REJECTED_DIR).glob("*.avro")):
        lines.append(f"  rejected by Kafka for good, kept: {path.name}: {_summary(codec, path.read_bytes())}")
    return "\n".join(lines)


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _in_use(directory: Path) -> bool:
    """A running producer holds an exclusive lock on LOCK; taking it for a moment tells."""
    with open(directory / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _event_time(codec: EventCodec, value: bytes) -> str:
    try:
        micros = codec.decode(value)["event_time"]
    except CodecError as error:
        return f"<undecodable: {error}>"
    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat(timespec="milliseconds")


def _summary(codec: EventCodec, value: bytes) -> str:
    try:
        event = codec.decode(value)
    except CodecError as error:
        return f"{len(value)} bytes, undecodable: {error}"
    return (
        f"event {event['event_id']}, {event['symbol']} {event['detector']} at {_event_time(codec, value)},"
        f" {len(value)} bytes"
    )
