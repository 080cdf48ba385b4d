"""Spools whose producer is gone: found, adopted and drained, so no spooled event waits forever.

A producer holds an exclusive flock on `<spool>/LOCK` for as long as it runs; a spool whose lock
is free and which still holds files was left by a producer that stopped (crashed, killed, or
closed during an outage). The next producer started with the same GUARDIAN_SPOOL_DIR adopts every
such spool that was written for its topic (`<spool>/TOPIC`): it drains them before its own events
go to Kafka directly, so a symbol's events still arrive oldest first. `guardian spool drain DIR`
does the same by hand. Drained segments are deleted as Kafka acknowledges them; the directory
keeps its few-byte LOCK, TOPIC and EPOCH files (the epoch keeps that id's sequences rising if it
runs again) and any events Kafka refused for good (`rejected/`).
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException, Producer

from guardian.errors import GuardianError
from guardian.logs import get_logger
from guardian.producers.spool import SEGMENT_SUFFIX, STANDBY_NAME, Spool

log = get_logger(__name__)

LOCK_FILE = "LOCK"  # in the spool directory, flocked by the producer that owns it
TOPIC_FILE = "TOPIC"  # the topic the spool's events are for
REJECTED_DIR = "rejected"  # events Kafka refused for good


class SpoolInUseError(GuardianError, RuntimeError):
    """The spool's lock is held: a running producer owns it."""


def lock_spool(directory: Path) -> IO[str]:
    """Take the spool's exclusive lock (creating the directory); raises SpoolInUseError if held."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK_FILE, "a")  # noqa: SIM115 - held for as long as the spool is used
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolInUseError(f"spool {directory} is in use by a running producer") from None
    return handle


def spool_topic(directory: Path) -> str | None:
    try:
        return (directory / TOPIC_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _holds_files(directory: Path) -> bool:
    return any(directory.glob(f"*{SEGMENT_SUFFIX}")) or (directory / STANDBY_NAME).exists()


def claim_orphans(root: Path, own: Path, topic: str) -> list[tuple[Path, IO[str]]]:
    """Lock and return every spool under `root` (not `own`) whose producer is gone, which still holds
    files, and which was written for `topic` (or says no topic: written before spools named theirs)."""
    claimed = []
    if not root.is_dir():
        return claimed
    for directory in sorted(root.iterdir()):
        if directory == own or not (directory / LOCK_FILE).exists() or not _holds_files(directory):
            continue
        if spool_topic(directory) not in (None, topic):
            continue
        try:
            claimed.append((directory, lock_spool(directory)))
        except SpoolInUseError:
            continue
    return claimed


@dataclass
class DrainResult:
    delivered: int = 0
    rejected: int = 0
    remaining: int = 0
    error: str = ""


def drain_spool(
    directory: Path,
    config: dict[str, Any],
    topic: str,
    *,
    timeout_s: float = 60.0,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] = lambda delivered: None,
) -> DrainResult:
    """Send every event of a spool whose lock the caller holds to `topic`, in order; acknowledged
    records are deleted. Returns when the spool is empty, Kafka failed a record, `timeout_s` passed
    or `stop` was set: what is left stays on disk for the next try."""
    spool = Spool(directory)
    result = DrainResult()
    failed: list[str] = []
    producer = Producer({k: v for k, v in config.items() if k not in ("on_delivery", "error_cb")})

    def delivered(segment: int) -> Callable[[KafkaError | None, Any], None]:
        def callback(error: KafkaError | None, message: Any) -> None:
            if error is None:
                result.delivered += 1
                spool.ack(segment)
            elif error.code() == KafkaError.MSG_SIZE_TOO_LARGE:  # would block the spool for good
                set_aside(directory, message.value())
                result.rejected += 1
                spool.ack(segment)
            else:
                failed.append(error.str())

        return callback

    deadline = time.monotonic() + timeout_s
    try:
        # Nothing is read into memory while Kafka is away or the topic is missing: an adopted spool
        # may hold a gigabyte, and the caller retries.
        try:
            metadata = producer.list_topics(topic, timeout=min(5.0, timeout_s)).topics[topic]
            if metadata.error is not None:
                failed.append(f"topic {topic!r}: {metadata.error.str()}")
        except KafkaException as exc:
            failed.append(f"Kafka unreachable: {exc.args[0].str()}")
        while not failed and time.monotonic() < deadline and not (stop and stop.is_set()):
            batch = spool.read_batch(5_000)
            if not batch:
                if producer.flush(min(1.0, max(0.0, deadline - time.monotonic()))) == 0:
                    break
                continue
            for segment, key, value in batch:
                while True:
                    try:
                        producer.produce(topic, value, key, on_delivery=delivered(segment))
                        break
                    except BufferError:
                        producer.poll(0.05)
                    except KafkaException as exc:
                        failed.append(exc.args[0].str())
                        break
                if failed:
                    break
            producer.poll(0)
            progress(result.delivered)
        producer.flush(max(0.0, min(5.0, deadline - time.monotonic())))
    finally:
        result.remaining = spool.pending_records()
        result.error = failed[0] if failed else ("" if result.remaining == 0 else "timed out")
        spool.close()
    return result


def set_aside(directory: Path, value: bytes) -> Path:
    """Keep an event Kafka will never take in <spool>/rejected/ (one file per event, its encoded bytes,
    readable with EventCodec.decode), so the events behind it flow on; returns its path."""
    rejected = directory / REJECTED_DIR
    rejected.mkdir(exist_ok=True)
    path = rejected / f"{time.time_ns()}.avro"
    path.write_bytes(value)
    return path


def adopt(claimed: list[tuple[Path, IO[str]]], config: dict[str, Any], topic: str, stop: threading.Event) -> None:
    """Drain each claimed orphan until it is empty (retrying while Kafka is away), then let go of it."""
    for directory, handle in claimed:
        total = 0
        while not stop.is_set():
            result = drain_spool(directory, config, topic, timeout_s=30.0, stop=stop)
            total += result.delivered
            if result.remaining == 0:
                log.info("adopted spool drained", spool=str(directory), delivered=total, rejected=result.rejected)
                break
            log.warning("adopted spool not drained yet; retrying", spool=str(directory), remaining=result.remaining,
                        error=result.error)  # fmt: skip
            stop.wait(1.0)
        handle.close()
