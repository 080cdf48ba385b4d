"""Whether a worker makes progress, for its /healthz: a worker that cannot commit says so, and why.

Progress is an offset commit. While events wait (read but not committed, finished but not yet
committed, or behind in Kafka), the time since the last commit grows; past the stall limit
(GUARDIAN_WORKER_STALL_S) the worker reports itself stalled, naming the step the oldest open batch
waits for, and logs it once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from guardian.logs import get_logger

if TYPE_CHECKING:
    from guardian.stream_processors.batch_source import BatchSource
    from guardian.stream_processors.ingest import IngestLoop

log = get_logger(__name__)


class Progress:
    """Whether the worker moves: the age of its last offset commit while events wait, and what it waits on."""

    def __init__(self) -> None:
        self.idle_at = time.monotonic()  # last time nothing waited
        self.lag = 0  # records behind the high watermark, all owned partitions (refreshed every 5 s)
        self.failed = ""  # the ingest loop ended with this error: nothing moves until a restart
        self.stalled = ""  # why /healthz is not ok, "" while it is

    def check(
        self, ingest: IngestLoop | None, source: BatchSource | None, stall_after_s: float, now: float | None = None
    ) -> float:
        """Update `stalled`; returns the commit age in seconds (0 while nothing waits)."""
        now = time.monotonic() if now is None else now
        if ingest is None or source is None:
            return 0.0
        open_s, open_events, step = ingest.waiting_on()
        if not (open_events or self.lag or source.uncommitted):
            self.idle_at = now
        age = now - max(self.idle_at, source.committed_at)
        if self.failed:
            reason = f"the ingest loop stopped: {self.failed}"
        elif age >= stall_after_s:
            waiting = (f"the oldest open batch ({open_events} events, read {open_s:.0f} s ago) waits for {step}"
                       if open_events else f"{self.lag} events wait in Kafka and none is read")  # fmt: skip
            reason = f"no offset committed for {age:.0f} s; {waiting}"
        else:
            reason = ""
        if reason and not self.stalled:
            log.error("worker makes no progress", reason=reason)
        elif self.stalled and not reason:
            log.info("worker makes progress again")
        self.stalled = reason
        return age if (open_events or self.lag or source.uncommitted) else 0.0
