"""Append-only disk spool for events Kafka cannot take right now.

Layout: `<dir>/<20-digit index>.seg` segment files. A record is
    u32 length | u32 crc32(body) | body, body = u16 key length | key | value
(big-endian). Records are appended to the newest segment, which rolls at
`segment_bytes`. The drain reads records in order and the producer acks each
one when Kafka confirmed it; a segment is deleted only when every record in it
has been acked and it is no longer written to. What a process left behind
(killed with -9, power loss) is re-read on the next open: a torn last record
(short or with a bad CRC) is cut off and reported, never replayed as garbage.

Two ends: `append()` adds at the tail; `append_front()` adds records that must go before
everything spooled so far (the producer's events that librdkafka gave back undelivered, which
are older than any spooled one). They go to a front segment, numbered one below the first
segment, so the drain and a recovery read them first; an episode of spooling starts its tail
two numbers above the last one used, to leave that number free. The front segment is a plain
file written with write(2): it is the rare path.

Writing: the active segment is a file allocated to `segment_bytes` and mapped into
memory (MAP_SHARED); a record is copied into the mapping, which puts it in the
kernel's page cache at once — no system call per record, and a process killed
with -9 loses nothing the kernel has. The unused tail of a mapped segment is zeros,
which the scan reads as "end", not as a torn record; a segment is cut to its
records' length when it is closed. fsync (msync) follows the policy: `fsync()`
called by the owner every N ms, or inline every N records; it is about power loss.

A maintained spool (`maintained=True`, the producer's) leaves the slow file work to the
owner's background thread, which calls `maintain()`: it keeps the next segment allocated
and mapped (a 64 MB mapping took 7-60 ms to fault in, and fell on the first spooled
`emit()` when Kafka went away), closes the segments appends rolled away from, and unmaps
the pages appends have filled before they are written back (see `_release_written`); its
`fsync()` holds neither the lock that appends take nor the GIL while the disk writes.

Thread-safety: every public method takes the spool's lock.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from guardian.logs import get_logger

log = get_logger(__name__)

HEADER = struct.Struct(">II")
KEY_LEN = struct.Struct(">H")
SEGMENT_SUFFIX = ".seg"
STANDBY_NAME = "next.standby"  # the maintained spool's next segment, renamed to its index when used


class FullPolicy(StrEnum):
    """What append() does when the spool holds `max_bytes` already.

    DROP_NEWEST (default): refuse the new record; it is counted in `dropped`, logged at ERROR
        and exported as a metric, so loss is loud and measurable, and the oldest data — the part
        of history an investigation needs first — is kept.
    OVERFLOW: keep writing past the bound (disk permitting) and count `overflowed_bytes`:
        for hosts where losing an event is worse than filling a disk.
    """

    DROP_NEWEST = "drop_newest"
    OVERFLOW = "overflow"


@dataclass
class _Segment:
    index: int
    path: Path
    size: int = 0
    written: int = 0  # records in the file
    read: int = 0  # records handed to the drain
    acked: int = 0
    read_offset: int = 0


# Linux >= 5.14; not in Python 3.11's mmap module.
_MADV_POPULATE_READ = 22
_MADV_DONTNEED = 4
PAGE = mmap.PAGESIZE


def _load_libc_madvise() -> Any:
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # not Linux/glibc
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


_madvise = _load_libc_madvise()


def _advise(mapped: mmap.mmap, advice: int, start: int = 0, length: int | None = None) -> bool:
    """madvise() a page-aligned range of a mapping without holding the GIL (ctypes releases it;
    CPython 3.11 holds it through mmap(MAP_POPULATE), 7-60 ms for 64 MB, which stalled the trading
    thread even when a background thread did it). False when the kernel cannot."""
    if _madvise is None:
        return False
    length = len(mapped) - start if length is None else length
    window = (ctypes.c_char * len(mapped)).from_buffer(mapped)
    try:
        return _madvise(ctypes.addressof(window) + start, length, advice) == 0
    finally:
        del window  # the buffer export would keep the mapping from closing


class _Writer:
    """A segment file allocated to its full size and mapped into memory, pages faulted in."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(self.fd, 0, size)
            self.map = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED)
            # READ, as MAP_POPULATE does for a shared mapping: WRITE would dirty every page, and the
            # next fsync wrote the whole 64 MB beside the caller (emit() p99 9 -> 22-25 µs).
            if not _advise(self.map, _MADV_POPULATE_READ):  # an older kernel: let mmap do it, GIL held
                self.map.close()
                self.map = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except OSError:  # a full disk, say: leave no half-made file behind to block the next try
            os.close(self.fd)
            path.unlink(missing_ok=True)
            raise

    def close(self, used: int) -> None:
        """Unmap, cut the file to the `used` bytes (the rest is zeros), sync. The written pages stay
        in the page cache after munmap, and fsync writes them."""
        self.map.close()
        os.ftruncate(self.fd, used)
        os.fsync(self.fd)
        os.close(self.fd)

    def discard(self) -> None:
        self.map.close()
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


@dataclass
class SpoolStats:
    records: int = 0
    bytes: int = 0
    appended: int = 0
    dropped: int = 0
    torn_records: int = 0
    overflowed_bytes: int = 0
    segments: int = 0
    recovered_records: int = 0


@dataclass
class Spool:
    directory: Path
    segment_bytes: int = 64 * 1024 * 1024
    max_bytes: int = 1024 * 1024 * 1024
    fsync_every_records: int = 0  # 0 = only the owner's periodic fsync()
    full_policy: FullPolicy = FullPolicy.DROP_NEWEST
    maintained: bool = False  # True: the owner calls maintain() from a background thread
    _segments: list[_Segment] = field(default_factory=list, init=False)
    _writer: _Writer | None = field(default=None, init=False)
    _standby: _Writer | None = field(default=None, init=False)
    _retired: list[tuple[_Writer, int]] = field(default_factory=list, init=False)  # (writer, bytes used)
    _front: _Segment | None = field(default=None, init=False)  # open for append_front()
    _front_fd: int = field(default=-1, init=False)
    _front_unsynced: bool = field(default=False, init=False)
    _high_index: int = field(default=-1, init=False)  # the highest segment number used so far
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _unsynced: int = field(default=0, init=False)
    _total_bytes: int = field(default=0, init=False)
    _released: tuple[_Writer | None, int] = field(default=(None, 0), init=False)  # see _release_written()
    stats: SpoolStats = field(default_factory=SpoolStats, init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    # -- recovery -------------------------------------------------------------------------------
    def _recover(self) -> None:
        paths = sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}"))
        standby = self.directory / STANDBY_NAME
        if standby.exists():
            # Prepared and never used, unless a power loss lost the rename that made it a segment.
            if _scan(standby)[1] == 0:
                standby.unlink()
            else:
                index = int(paths[-1].stem) + 1 if paths else 0
                paths.append(standby.rename(self.directory / f"{index:020d}{SEGMENT_SUFFIX}"))
        for path in paths:
            segment = _Segment(int(path.stem), path)
            self._high_index = max(self._high_index, segment.index)
            good_end, count, torn = _scan(path)
            if torn:
                # Only the tail can be torn by a crash; everything before it is intact and kept.
                log.error("spool: torn record cut off", segment=str(path), kept_records=count, cut_bytes=torn)
                self.stats.torn_records += 1
            if path.stat().st_size > good_end:  # a torn tail, or the zeroed rest of a mapped segment
                with open(path, "r+b") as handle:
                    handle.truncate(good_end)
            segment.size, segment.written = good_end, count
            if count == 0:
                path.unlink()
                continue
            self._segments.append(segment)
            self._total_bytes += good_end
            self.stats.recovered_records += count
        if self.stats.recovered_records:
            log.warning(
                "spool: events left by an earlier process will be delivered first",
                records=self.stats.recovered_records,
                directory=str(self.directory),
            )

    # -- writing --------------------------------------------------------------------------------
    def append(self, key: bytes, value: bytes) -> bool:
        """Append one record; False when it was dropped because the spool is full (DROP_NEWEST)."""
        with self._lock:
            return self._append_locked(key, value)

    def _append_locked(self, key: bytes, value: bytes) -> bool:
        body_len = KEY_LEN.size + len(key) + len(value)
        record_len = HEADER.size + body_len
        if not self._admit(record_len):
            return False
        segment = self._active_segment(record_len)
        assert self._writer is not None
        mapped = self._writer.map
        body = b"".join((KEY_LEN.pack(len(key)), key, value))
        at = segment.size
        HEADER.pack_into(mapped, at, body_len, zlib.crc32(body))
        mapped[at + HEADER.size : at + record_len] = body
        segment.size += record_len
        segment.written += 1
        self._total_bytes += record_len
        self.stats.appended += 1
        self._unsynced += 1
        if self.fsync_every_records and self._unsynced >= self.fsync_every_records:
            self._fsync_locked()
        return True

    def append_front(self, key: bytes, value: bytes) -> bool:
        """Append one record to the front segment: it drains before every record spooled by
        append() so far. False when it was dropped because the spool is full (DROP_NEWEST)."""
        body = b"".join((KEY_LEN.pack(len(key)), key, value))
        record = HEADER.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._front is None and not self._open_front():
                return self._append_locked(key, value)
            if not self._admit(len(record)):
                return False
            assert self._front is not None
            os.write(self._front_fd, record)  # in the page cache at once: kill -9 loses nothing
            self._front.size += len(record)
            self._front.written += 1
            self._front_unsynced = True
            self._total_bytes += len(record)
            self.stats.appended += 1
            return True

    def _open_front(self) -> bool:
        index = self._segments[0].index - 1 if self._segments else self._high_index + 1
        if index < 0 or (self._segments and self._segments[0].read):
            # Not for the producer: its tail leaves the number free, and nothing drains while
            # records can come back undelivered. Should it happen, the record goes to the tail.
            log.warning("spool: no room before the first segment; a returned record goes last", index=index + 1)
            return False
        self._front = _Segment(index, self.directory / f"{index:020d}{SEGMENT_SUFFIX}")
        self._front_fd = os.open(self._front.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._segments.insert(0, self._front)
        self._high_index = max(self._high_index, index)
        return True

    def _close_front(self) -> None:
        if self._front is not None:
            os.fsync(self._front_fd)
            os.close(self._front_fd)
            self._front, self._front_fd = None, -1

    def _admit(self, record_len: int) -> bool:
        """Whether a record of this size fits the bound, or the policy lets it past."""
        if self._total_bytes + record_len <= self.max_bytes:
            return True
        if self.full_policy is FullPolicy.DROP_NEWEST:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 10_000 == 0:
                log.error(
                    "spool full: dropping newest events",
                    dropped_total=self.stats.dropped,
                    max_bytes=self.max_bytes,
                    directory=str(self.directory),
                )
            return False
        self.stats.overflowed_bytes += record_len
        return True

    def _active_segment(self, record_len: int) -> _Segment:
        if self._segments and self._writer is not None:
            active = self._segments[-1]
            if active.size + record_len <= len(self._writer.map):
                return active
        self._retire_writer()
        # A new episode starts two above the last number used: one below stays free for a front.
        index = self._segments[-1].index + 1 if self._segments else self._high_index + 2
        self._high_index = max(self._high_index, index)
        segment = _Segment(index, self.directory / f"{index:020d}{SEGMENT_SUFFIX}")
        size = max(self.segment_bytes, record_len)
        if self._standby is not None and len(self._standby.map) >= size:
            self._writer, self._standby = self._standby, None
            os.rename(self._writer.path, segment.path)
            self._writer.path = segment.path
        else:
            # Blocks allocated now and pages faulted in now, once per segment, so that an append
            # never waits for the filesystem to allocate (measured: it shows in emit()'s p99).
            self._writer = _Writer(segment.path, size)
        self._segments.append(segment)
        return segment

    def _retire_writer(self) -> None:
        """Stop writing to the active segment; a maintained spool closes it in maintain()."""
        if self._writer is None:
            return
        used = self._segments[-1].size
        if self.maintained:
            self._retired.append((self._writer, used))
        else:
            self._writer.close(used)
        self._writer, self._unsynced = None, 0

    def maintain(self) -> None:
        """The file work appends must not wait for: close retired segments, prepare the next one,
        unmap the pages appends have filled."""
        with self._lock:
            retired, self._retired = self._retired, []
            prepare = self._standby is None
            writer, position = self._writer, self._segments[-1].size if self._segments else 0
        for done, used in retired:
            done.close(used)
        if prepare:
            standby = _Writer(self.directory / STANDBY_NAME, self.segment_bytes)
            with self._lock:
                self._standby = standby
        if writer is not None:
            self._release_written(writer, position)

    def _release_written(self, writer: _Writer, position: int) -> None:
        """Unmap the pages of the active segment that appends have filled (MADV_DONTNEED: the data
        stays in the page cache, dirty, and a read maps it back).

        Writing a dirty page back (fsync, or the kernel's flusher) write-protects it in every
        mapping, and in a process whose threads run on two CPUs each such page costs the other
        CPU a TLB-shootdown interrupt, in the middle of an emit(): ~3,600 interrupts on the
        trading thread's CPU per 100k spooled events, which put emit()'s broker-down p99 at
        25-40 µs (tmpfs, never written back: 15-17). Unmapped first, a written-back page costs
        nothing; one interrupt per call here instead. Only this thread closes writers, so the
        mapping stays open through the call; appends only write at `position` or after it."""
        done_writer, done_up_to = self._released
        start = done_up_to if writer is done_writer else 0
        end = position - position % PAGE  # the page being filled stays mapped
        if end > start:
            _advise(writer.map, _MADV_DONTNEED, start, end - start)
            self._released = (writer, end)

    def fsync(self) -> None:
        with self._lock:
            if not self.maintained:
                self._fsync_locked()
                return
            writer = self._writer if self._unsynced else None
            position = self._segments[-1].size if self._segments else 0
            self._unsynced = 0
            front_fd = self._front_fd if self._front_unsynced else -1
            self._front_unsynced = False
        if front_fd >= 0:
            os.fdatasync(front_fd)
        # fdatasync, not mmap.flush(): both write the mapping's dirty pages (on Linux msync(MS_SYNC)
        # is an fsync of the range), but CPython 3.11 holds the GIL through msync, which stalled
        # emit() up to 27 ms, and os.fdatasync releases it. Only maintain() and close() close
        # writers, both on this thread, so the fd is open.
        if writer is not None:
            self._release_written(writer, position)  # written back unmapped: no interrupts
            os.fdatasync(writer.fd)

    def _fsync_locked(self) -> None:
        if self._writer is not None and self._unsynced:
            self._writer.map.flush()
            self._unsynced = 0
        if self._front_unsynced:
            os.fdatasync(self._front_fd)
            self._front_unsynced = False

    # -- draining -------------------------------------------------------------------------------
    def read_batch(self, max_records: int) -> list[tuple[int, bytes, bytes]]:
        """The next records not yet handed out, in order, as (segment index, key, value)."""
        out: list[tuple[int, bytes, bytes]] = []
        with self._lock:
            for segment in self._segments:
                if segment.read >= segment.written:
                    continue
                with open(segment.path, "rb") as handle:
                    handle.seek(segment.read_offset)
                    while segment.read < segment.written and len(out) < max_records:
                        length, crc = HEADER.unpack(handle.read(HEADER.size))
                        body = handle.read(length)
                        if zlib.crc32(body) != crc:  # cannot happen for records this process wrote
                            raise OSError(f"spool record corrupted on disk in {segment.path}")
                        (key_len,) = KEY_LEN.unpack_from(body)
                        out.append((segment.index, body[2 : 2 + key_len], body[2 + key_len :]))
                        segment.read += 1
                        segment.read_offset += HEADER.size + length
                if len(out) >= max_records:
                    break
        return out

    def ack(self, segment_index: int) -> None:
        """Kafka confirmed one record of this segment; delete segments that are done."""
        with self._lock:
            for segment in self._segments:
                if segment.index == segment_index:
                    segment.acked += 1
                    break
            self._delete_done_segments()

    def rewind(self) -> None:
        """A drained record failed: hand out every unacked segment again from its start (duplicates
        of already-acked records are possible and deduplicated downstream by event id)."""
        with self._lock:
            for segment in self._segments:
                segment.read = segment.acked = segment.read_offset = 0

    def _delete_done_segments(self) -> None:
        while self._segments:
            oldest = self._segments[0]
            if oldest.acked < oldest.written or oldest.read < oldest.written:
                return
            if oldest is self._front:
                self._close_front()
            elif oldest is self._segments[-1] and self._writer is not None:
                self._retire_writer()  # the active one: start a fresh file on the next append
            oldest.path.unlink(missing_ok=True)
            self._total_bytes -= oldest.size
            self._segments.pop(0)

    # -- state ----------------------------------------------------------------------------------
    def pending_records(self) -> int:
        """Records in the spool not yet acked (handed out or not)."""
        with self._lock:
            return sum(s.written - s.acked for s in self._segments)

    def unread_records(self) -> int:
        with self._lock:
            return sum(s.written - s.read for s in self._segments)

    def snapshot(self) -> SpoolStats:
        with self._lock:
            self.stats.records = sum(s.written - s.acked for s in self._segments)
            self.stats.bytes = self._total_bytes
            self.stats.segments = len(self._segments)
            return SpoolStats(**vars(self.stats))

    def close(self) -> None:
        """Close every file; call it once the thread that calls maintain() has stopped."""
        with self._lock:
            self._retire_writer()
            self._close_front()
            for writer, used in self._retired:
                writer.close(used)
            self._retired = []
            if self._standby is not None:
                self._standby.discard()
                self._standby = None


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(end offset, body) of each good record from the start of a segment's bytes; stops at the
    zeros of an unused tail, or at a short or torn record."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        body = data[offset + HEADER.size : end]
        if length == 0 or end > len(data) or zlib.crc32(body) != crc:
            return
        yield end, body
        offset = end


def _scan(path: Path) -> tuple[int, int, int]:
    """(end of the last good record, good records, torn bytes after it) of a segment file.

    Zeros after the last record are the unused part of a mapped segment (the process
    stopped before closing it), not a torn record."""
    data = path.read_bytes()
    offset = count = 0
    for end, _body in _records(data):
        offset, count = end, count + 1
    tail = data[offset:]
    return offset, count, 0 if tail.count(0) == len(tail) else len(tail)


def read_spool(directory: Path) -> Iterator[tuple[Path, bytes, bytes]]:
    """Every record a spool directory holds, as (segment file, key, value), in the order the next
    producer would send them. Read-only: nothing is cut, renamed or deleted, so a spool in use by
    a running producer can be read too (its acked records are only forgotten in memory)."""
    paths = sorted(Path(directory).glob(f"*{SEGMENT_SUFFIX}"))
    standby = Path(directory) / STANDBY_NAME
    if standby.exists():
        paths.append(standby)  # holds records only if a power loss lost its rename
    for path in paths:
        for _end, body in _records(path.read_bytes()):
            (key_len,) = KEY_LEN.unpack_from(body)
            yield path, body[2 : 2 + key_len], body[2 + key_len :]
