"""`guardian spool`: what a trading host's disk spool holds, for the people who run the host."""

from __future__ import annotations

import fcntl
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click

from guardian.kafka_config import client_config
from guardian.producers.orphans import LOCK_FILE, REJECTED_DIR, SpoolInUseError, drain_spool, lock_spool, spool_topic
from guardian.producers.spool import read_spool
from guardian.schemas.codec import EventCodec
from guardian.schemas.errors import CodecError
from guardian.settings import get_settings


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


@spool.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--topic", help="Topic to send to (default: the one the spool names, else GUARDIAN_EVENTS_TOPIC).")
@click.option("--timeout", default=300.0, show_default=True, help="Give up after this many seconds.")
def drain(directory: Path, topic: str | None, timeout: float) -> None:
    """Send the events of a stopped producer's spool DIRECTORY to Kafka, in order, and delete them.

    Refused while a running producer holds the spool. What Kafka acknowledged is deleted; what is
    left after an error or the timeout stays for the next try."""
    settings = get_settings()
    if not (directory / LOCK_FILE).exists():
        raise click.ClickException(f"{directory} is not a producer spool (no LOCK file in it)")
    try:
        handle = lock_spool(directory)
    except SpoolInUseError as error:
        raise click.ClickException(f"{error}: it drains itself") from None
    topic = topic or spool_topic(directory) or settings.events_topic
    total = sum(1 for _ in read_spool(directory))
    config = client_config(settings, {"enable.idempotence": True, "acks": "all", "compression.type": "lz4"})
    with handle, click.progressbar(length=total, label=f"draining {directory} to {topic}") as bar:
        done = [0]

        def advance(delivered: int) -> None:
            bar.update(delivered - done[0])
            done[0] = delivered

        result = drain_spool(directory, config, topic, timeout_s=timeout, progress=advance)
        advance(result.delivered)
    click.echo(f"delivered {result.delivered}, set aside {result.rejected} (too large), left {result.remaining}")
    if result.remaining:
        raise click.ClickException(f"{result.remaining} event(s) not delivered: {result.error}")


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
