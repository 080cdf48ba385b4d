"""Rebuild a lost (or stale) Redis hot view: newest checkpoint, then the Kafka tail, then the 24 h window.

1. the view is marked REBUILDING (`guardian:hotview`), under a lock so one rebuild runs at a time;
2. the newest valid fleet checkpoint is merged in (state.py; a corrupt one falls back to the one
   before, none means a full replay);
3. the tail — the events topic from the checkpoint's offsets to its end when the rebuild began —
   is replayed through the hot view's own batch script: the newest events and breakers are
   current once it is done;
   and the view is marked READY (window: refilling);
4. the rest of the 24 h window (from the first offset of the last 24 h to the checkpoint's
   offsets) is replayed, which refills `recent` and the minute counters exactly as ingestion
   would (the script counts each event once, whatever order it sees them in);
5. the window is marked complete, and the rebuild is audited.

Ingestion goes on meanwhile: the script's sequence guards keep the replay from moving anything
backwards. Events the worker dead-letters are skipped here by the same rules.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import redis.asyncio as redis
from confluent_kafka import Consumer, TopicPartition

from guardian.errors import GuardianError
from guardian.kafka_config import client_config
from guardian.logs import get_logger
from guardian.schemas.checkpoint import FLEET, Checkpoint, CheckpointStore, CheckpointStoreError
from guardian.settings import Settings
from guardian.sinks import audit
from guardian.sinks.redis_hot_view import (
    COMPLETE,
    READY,
    REBUILDING,
    REFILLING,
    STATUS_KEY,
    WINDOW_MICROS,
)
from guardian.stream_processors.recovery import state
from guardian.stream_processors.replay.redrive import redrive

log = get_logger(__name__)

LOCK_KEY = "guardian:hotview:rebuild-lock"
LOCK_TTL_S = 60  # renewed while the rebuild runs: a killed rebuild frees the view for another within a minute
Progress = Callable[[str, int, int], None]  # (phase, done, total)


class RebuildBusyError(GuardianError):
    """Another rebuild holds the lock."""


@dataclass
class RebuildReport:
    source: str  # "checkpoint" or "full replay"
    checkpoint_id: int | None
    checkpoint_age_s: float | None
    merged_fields: int = 0
    tail_events: int = 0
    window_events: int = 0
    skipped_events: int = 0
    current_after_s: float = 0.0  # newest events and breakers current (phase 3 done)
    seconds: float = 0.0  # everything, the 24 h window included
    problems: list[str] = field(default_factory=list)


def _ranges(consumer: Consumer, topic: str, checkpoint: Checkpoint | None) -> tuple[dict, dict]:
    """(tail, window): partition -> (start, end) offsets to replay. The tail starts at the checkpoint's
    offsets (everything, without one); the window covers the last 24 h before that."""
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    since_ms = (time.time_ns() // 1000 - WINDOW_MICROS) // 1000
    found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions], timeout=10)
    tail, window = {}, {}
    for tp in found:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        window_start = high if tp.offset < 0 else max(low, tp.offset)  # -1: nothing newer than 24 h
        start = checkpoint.offsets.get(tp.partition, low) if checkpoint else low
        start = min(max(start, low), high)
        if high > start:
            tail[tp.partition] = (start, high)
        if start > window_start:
            window[tp.partition] = (window_start, start)
    return tail, window


async def replay(
    settings: Settings, ranges: dict[int, tuple[int, int]], on_progress: Callable[[int], None] = lambda done: None
) -> tuple[int, int]:
    """Replay offset ranges of the events topic into the hot view alone; (applied, skipped) events."""
    if not ranges:
        return 0, 0
    # emit=False: what a rebuild re-applies was announced when it happened (a lost view is no news).
    summary = await redrive(settings, ranges, progress=lambda done, total: on_progress(done), postgres=False,
                            emit=False)  # fmt: skip
    return summary.matched, summary.dead_letters


# Renew the lock only while it is still ours: one that expired (a stalled rebuild) may be another's now.
RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"


async def _hold_lock(client: redis.Redis, token: str) -> None:
    while True:
        await asyncio.sleep(LOCK_TTL_S / 3)
        if not await client.eval(RENEW, 1, LOCK_KEY, token, LOCK_TTL_S):
            log.error("the rebuild lock expired and is not ours any more: another rebuild may run beside this one")
            return


async def rebuild_hot_view(
    settings: Settings, *, reason: str, actor: str | None = None, progress: Progress = lambda *a: None
) -> RebuildReport:
    began = time.monotonic()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    token = uuid.uuid4().hex
    if not await client.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL_S):
        await client.aclose()
        raise RebuildBusyError("a hot view rebuild is already running (it holds guardian:hotview:rebuild-lock)")
    keeper = asyncio.ensure_future(_hold_lock(client, token))
    report: RebuildReport | None = None
    try:
        began_us = time.time_ns() // 1000
        status = {"state": REBUILDING, "window": REFILLING, "since": began_us, "detail": reason}
        await client.hset(STATUS_KEY, mapping=status)
        store = CheckpointStore(settings)
        try:
            chosen, problems = await asyncio.to_thread(store.latest_with_problems, FLEET, settings.worker_group)
        except CheckpointStoreError as exc:  # the events topic may still be there: replay all of it
            chosen, problems = None, [f"checkpoints unreadable: {exc}"]
        report = RebuildReport(
            "checkpoint" if chosen else "full replay",
            chosen.id if chosen else None,
            round(time.time() - chosen.created_at_us / 1e6, 1) if chosen else None,
            problems=problems,
        )
        for problem in problems:
            log.warning("checkpoint skipped", problem=problem)
        if chosen is None:
            log.warning("no valid fleet checkpoint: rebuilding the hot view by a full replay")
        else:
            report.merged_fields = await state.merge(client, chosen.state)
        probe = Consumer(client_config(settings, {"group.id": "guardian-rebuild-probe", "log_level": 0}))
        try:
            tail, window = await asyncio.to_thread(_ranges, probe, settings.events_topic, chosen)
        finally:
            probe.close()
        total_tail = sum(end - start for start, end in tail.values())
        report.tail_events, skipped_tail = await replay(settings, tail, lambda done: progress("tail", done, total_tail))
        report.current_after_s = round(time.monotonic() - began, 3)
        # The newest events, breakers and drifts are current: readers (restore(), the API) may trust the view.
        # The 24 h windows fill up behind it; `window` says when they are whole.
        await client.hset(STATUS_KEY, mapping={
            "state": READY, "window": REFILLING, "since": time.time_ns() // 1000,
            "checkpoint": chosen.id if chosen else 0, "detail": f"24 h window refilling ({reason})",
        })  # fmt: skip
        total_window = sum(end - start for start, end in window.values())
        report.window_events, skipped_window = await replay(
            settings, window, lambda done: progress("24 h window", done, total_window)
        )
        report.skipped_events = skipped_tail + skipped_window
        report.seconds = round(time.monotonic() - began, 3)
        await client.hset(STATUS_KEY, mapping={
            "window": COMPLETE, "detail": f"rebuilt from {report.source} in {report.seconds} s ({reason})",
        })  # fmt: skip
        log.info("hot view rebuilt", reason=reason, **asdict(report))
        return report
    except BaseException as exc:
        # Left REBUILDING: readers keep treating the view as incomplete until a rebuild finishes.
        await audit.record(settings.postgres_dsn, "recover hot-view", target=settings.redis_url, status=1,
                           detail={"reason": reason, "error": repr(exc)}, actor=actor,
                           duration_s=time.monotonic() - began)  # fmt: skip
        raise
    finally:
        keeper.cancel()
        if report is not None and report.seconds:
            await audit.record(settings.postgres_dsn, "recover hot-view", target=settings.redis_url, status=0,
                               detail={"reason": reason, **asdict(report)}, actor=actor,
                               duration_s=time.monotonic() - began)  # fmt: skip
        if await client.get(LOCK_KEY) == token.encode():
            await client.delete(LOCK_KEY)
        await client.aclose()
