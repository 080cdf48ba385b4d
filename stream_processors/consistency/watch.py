"""The fleet verifies itself: every GUARDIAN_VERIFY_INTERVAL_S, the worker that owns partition 0 (the
same one that checkpoints) runs `guardian verify` over the last GUARDIAN_VERIFY_WINDOW_S.

Fail-open: the verification runs in a child process at the lowest CPU priority, so it takes the CPU
ingestion leaves over and never blocks the worker's event loop; a verification that fails or overruns
is killed and alerted on, nothing else. Its findings become `guardian_consistency_*` metrics and the P1
alert `consistency_mismatch` (label `kind`), resolved by the next clean run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable

import orjson
import redis.asyncio as redis

from guardian.logs import get_logger
from guardian.settings import Settings
from guardian.stream_processors import metrics
from guardian.stream_processors.alerts import conditions
from guardian.stream_processors.alerts.conditions import Condition
from guardian.stream_processors.alerts.engine import Notification
from guardian.stream_processors.consistency.verify import KINDS

log = get_logger(__name__)

RULE = "consistency_mismatch"
SEVERITY = "P1"
FAILED = "verification_failed"  # the `kind` of the alert when the verification itself fails
NICE = 19


class ConsistencyWatch:
    def __init__(self, settings: Settings, leads: Callable[[], bool]) -> None:
        self.settings = settings
        self.leads = leads

    async def run(self, client: redis.Redis) -> list[Notification]:
        """One verification if this worker leads; the alert changes it calls for."""
        if not self.leads():  # another worker verifies: what this one found before is not the fleet's say any more
            for kind in KINDS:
                metrics.CONSISTENCY_MISMATCHES.labels(kind).set(0)
            return []
        began = time.monotonic()
        report, failure = await self._verify()
        metrics.CONSISTENCY_LAST_RUN.set(time.time())
        metrics.CONSISTENCY_SECONDS.set(time.monotonic() - began)
        found: dict[str, int] = report.get("mismatches", {}) if report else {}
        if failure:
            metrics.CONSISTENCY_RUNS.labels("failed").inc()
            log.error("periodic verification failed", error=failure)
        else:
            metrics.CONSISTENCY_EVENTS.set(report.get("events", 0))
            for kind in KINDS:
                metrics.CONSISTENCY_MISMATCHES.labels(kind).set(found.get(kind, 0))
            bad = any(found.values())
            metrics.CONSISTENCY_RUNS.labels("mismatch" if bad else "ok").inc()
            (log.error if bad else log.info)("periodic verification", events=report.get("events"), mismatches=found,
                                             seconds=report.get("seconds"))  # fmt: skip
        watched = [Condition({"kind": FAILED}, bool(failure), f"the periodic verification failed: {failure}"
                             if failure else "the periodic verification runs again")]  # fmt: skip
        if not failure:
            watched += [Condition({"kind": kind}, found.get(kind, 0) > 0, _summary(kind, found.get(kind, 0), report))
                        for kind in KINDS]  # fmt: skip
        return await conditions.notifications(RULE, SEVERITY, watched, client)

    async def _verify(self) -> tuple[dict | None, str]:
        """(the report, "") or (None, why it failed)."""
        actor = f"worker:{socket.gethostname()}:{os.getpid()}"
        command = [sys.executable, "-m", "guardian.cli", "verify", "--since", f"{self.settings.verify_window_s:g}s",
                   "--settle", "5s", "--json", "--actor", actor]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, preexec_fn=lambda: os.nice(NICE),
        )  # fmt: skip
        limit = max(60.0, self.settings.verify_interval_s)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=limit)
        except TimeoutError:
            process.kill()
            await process.wait()
            return None, f"did not finish within {limit:g} s"
        if process.returncode not in (0, 1) or not out.strip():
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            return None, f"exit status {process.returncode}: {tail[0][:500]}"
        try:
            return orjson.loads(out.strip().splitlines()[-1]), ""
        except orjson.JSONDecodeError as exc:
            return None, f"unreadable report: {exc}"


def _summary(kind: str, count: int, report: dict | None) -> str:
    words = kind.replace("_", " ")
    if not count:
        return f"no {words} in the last verification"
    window = f"events since {report.get('window_start')}" if report else "the window"
    return f"{count} {words}(s) between Kafka, PostgreSQL and the hot view in {window}: run `guardian verify --repair`"
