"""A worker's progress report: stalled once nothing is committed for the limit while events wait."""

from __future__ import annotations

from dataclasses import dataclass

from guardian.stream_processors.progress import Progress


@dataclass
class Ingest:
    open_events: int = 0
    step: str = ""

    def waiting_on(self) -> tuple[float, int, str]:
        return (12.0 if self.open_events else 0.0), self.open_events, self.step


@dataclass
class Source:
    committed_at: float = 0.0
    uncommitted: bool = False


def test_an_idle_worker_is_never_stalled_however_old_its_last_commit():
    progress = Progress()
    assert progress.check(Ingest(), Source(committed_at=0.0), 60, now=1_000.0) == 0.0
    assert progress.stalled == ""


def test_events_waiting_past_the_limit_stall_it_naming_the_step_and_a_commit_clears_it():
    progress, ingest, source = Progress(), Ingest(), Source(committed_at=100.0)
    progress.check(ingest, source, 60, now=100.0)  # idle until now
    ingest.open_events, ingest.step = 500, "stage postgres"
    assert progress.check(ingest, source, 60, now=159.0) == 59.0 and progress.stalled == ""
    progress.check(ingest, source, 60, now=161.0)
    assert progress.stalled.startswith("no offset committed for 61 s")
    assert "waits for stage postgres" in progress.stalled
    source.committed_at = 162.0  # PostgreSQL is back: the batch completes and is committed
    progress.check(ingest, source, 60, now=163.0)
    assert progress.stalled == ""


def test_lag_with_nothing_read_and_a_stopped_loop_are_stalls_too():
    progress, source = Progress(), Source(committed_at=0.0)
    progress.check(Ingest(), source, 60, now=10.0)
    progress.lag = 32_013  # events wait in Kafka, none is read
    progress.check(Ingest(), source, 60, now=80.0)
    assert "32013 events wait in Kafka and none is read" in progress.stalled
    progress.failed = "RuntimeError('bug')"
    progress.lag = 0
    progress.check(Ingest(), source, 60, now=81.0)
    assert progress.stalled == "the ingest loop stopped: RuntimeError('bug')"
