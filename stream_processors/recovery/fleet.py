"""What each worker does for recovery: checkpoint the fleet's derived state, and notice a lost hot view.

One worker writes the fleet's checkpoints: the owner of partition 0 of the events topic (every
worker holds the whole alert table and reads the same Redis, so any one could; one is enough).
A checkpoint records the group's committed offsets first, then the state: the state reflects
at least every event before those offsets, so replaying from them never leaves a gap.

The same worker watches `guardian:hotview`: missing while the group has committed offsets (Redis
lost the view), or naming an older checkpoint than the newest one written (Redis came back from
an old snapshot), it starts a rebuild (`guardian recover hot-view`) in a child process, so the
replay's decoding runs beside ingestion instead of in its event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis as redis_sync
import redis.asyncio as redis

from guardian.kafka_config import client_config
from guardian.kafka_lookup import admin_client, committed
from guardian.logs import get_logger
from guardian.schemas.checkpoint import FLEET, CheckpointStore, key_for, pack
from guardian.settings import Settings
from guardian.sinks.redis_hot_view import COMPLETE, READY, REBUILDING, STATUS_KEY
from guardian.stream_processors import metrics
from guardian.stream_processors.recovery import state
from guardian.stream_processors.recovery.rebuild import LOCK_KEY

log = get_logger(__name__)

LEADER_PARTITION = 0


def committed_offsets(settings: Settings, timeout: float = 10.0, admin: Any = None) -> dict[int, int]:
    """The fleet group's committed offsets on the events topic (partition -> next offset to read)."""
    return committed(admin or admin_client(settings)[0], settings.worker_group, settings.events_topic, timeout)


def _text(status: Mapping[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in status.items()}  # fmt: skip


def same_view(before: Mapping[str, str], after: Mapping[str, str]) -> bool:
    """Whether two reads of the hot view's status are of the same view: a view lost and refilled since
    has no status or a new one (its `since`); only the checkpoint id moves on a view that stayed."""
    return {k: v for k, v in before.items() if k != "checkpoint"} == {
        k: v for k, v in after.items() if k != "checkpoint"
    }


class FleetRecovery:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        owned_partitions: Callable[[], Sequence[int]],
        alert_state: Mapping[str, Any],
    ) -> None:
        self.settings = settings
        self.client = client
        self.owned_partitions = owned_partitions
        self.alert_state = alert_state
        self.store = CheckpointStore(settings)
        self.last_id = 0  # newest fleet checkpoint this worker wrote
        self._slot = -1
        self._rebuild: subprocess.Popen | None = None
        self._rebuild_reason = ""
        self._leading = False
        self._admin_client: Any = None
        self._reader_client: redis_sync.Redis | None = None  # the dump's, in a thread

    def _reader(self) -> redis_sync.Redis:
        if self._reader_client is None:
            self._reader_client = redis_sync.Redis.from_url(self.settings.redis_url, socket_timeout=10)
        return self._reader_client

    def _admin(self) -> Any:
        """One AdminClient for the worker's life: a new one per checkpoint connected again each time."""
        from confluent_kafka.admin import AdminClient

        if self._admin_client is None:
            self._admin_client = AdminClient(client_config(self.settings, {"log_level": 0}))
        return self._admin_client

    def leads(self) -> bool:
        return LEADER_PARTITION in self.owned_partitions()

    async def status(self) -> dict[str, str]:
        return _text(await self.client.hgetall(STATUS_KEY))

    async def checkpoint(self, *, leading: bool | None = None) -> int | None:
        """Write one fleet checkpoint if this worker leads and the view is complete; its id, or None."""
        if not (self.leads() if leading is None else leading):
            return None
        status = await self.status()
        # A checkpoint of a view that is incomplete, stale (older than the newest checkpoint) or about
        # to be rebuilt would carry its gaps into every later rebuild.
        if (
            status.get("state") != READY
            or self._rebuild is not None
            or int(status.get("checkpoint") or 0) < self.last_id
        ):
            metrics.RECOVERY_ACTIONS.labels("checkpoint", "skipped: hot view incomplete").inc()
            return None
        began = time.perf_counter()
        offsets = await asyncio.to_thread(committed_offsets, self.settings, 10.0, self._admin())
        body = await asyncio.to_thread(state.dump, self._reader())
        if not same_view(status, await self.status()):
            # Lost (FLUSHALL, a restart from an old snapshot) or rebuilt while it was read: the dump holds only
            # what was written since, and a rebuild would start from it as the newest checkpoint.
            metrics.RECOVERY_ACTIONS.labels("checkpoint", "skipped: hot view changed while read").inc()
            log.warning("checkpoint dropped: the hot view was lost or rebuilt while it was read")
            return None
        body["alert_state"] = dict(self.alert_state)  # its changelog topic is its own durable copy
        checkpoint_id = max(time.time_ns() // 1000, self.last_id + 1)
        value = await asyncio.to_thread(pack, FLEET, self.settings.worker_group, body,
                                        checkpoint_id=checkpoint_id, offsets=offsets)  # fmt: skip
        # Round the slots: compaction keeps the newest record per key, so the last `kept` survive. A restarted
        # worker starts at 0 again, which overwrites one of them with something newer: still `kept` distinct.
        self._slot = (self._slot + 1) % self.settings.checkpoints_kept
        await asyncio.to_thread(self.store.write, key_for(FLEET, self.settings.worker_group, self._slot), value)
        await self.client.hset(STATUS_KEY, "checkpoint", checkpoint_id)
        self.last_id = checkpoint_id
        took = time.perf_counter() - began
        metrics.RECOVERY_CHECKPOINT_SECONDS.observe(took)
        metrics.RECOVERY_CHECKPOINT_BYTES.set(len(value))
        metrics.RECOVERY_CHECKPOINT_TIMESTAMP.set(time.time())
        metrics.RECOVERY_ACTIONS.labels("checkpoint", "written").inc()
        log.debug("fleet checkpoint written", id=checkpoint_id, bytes=len(value), ms=round(took * 1000, 1),
                  symbols=len(body["breaker"]), latest=len(body["latest"]))  # fmt: skip
        return checkpoint_id

    async def watch(self, *, at_start: bool = False) -> str:
        """Look at the hot view's status; start a rebuild if it is lost or stale. Returns what it saw."""
        status = await self.status()
        leading = self.leads()
        if not (at_start or leading):  # only the leader acts; every worker reports what it sees
            self._leading = False
            seen = status.get("state", "") or "lost"
            metrics.RECOVERY_REBUILDING.set(0 if seen == READY else 1)
            return seen
        if leading and not self._leading:
            # Newly leading: learn the newest checkpoint written, so that a Redis that came back from an
            # older snapshot is seen as stale before this worker's own first checkpoint would hide it.
            self._leading = True
            newest = await asyncio.to_thread(self.store.latest, FLEET, self.settings.worker_group)
            self.last_id = max(self.last_id, newest.id if newest else 0)
        if self._rebuild is not None and self._rebuild.poll() is not None:
            outcome = "finished" if self._rebuild.returncode == 0 else f"failed (exit {self._rebuild.returncode})"
            metrics.RECOVERY_ACTIONS.labels("hot view rebuild", outcome.split(" ")[0]).inc()
            (log.info if self._rebuild.returncode == 0 else log.warning)(
                "hot view rebuild " + outcome, reason=self._rebuild_reason
            )
            self._rebuild = None
        state_now = status.get("state", "")
        if state_now == REBUILDING:
            # A rebuild whose process died leaves REBUILDING and, after LOCK_TTL_S, no lock: start another.
            if self._rebuild is None and not await self.client.exists(LOCK_KEY):
                self._start_rebuild("a rebuild stopped before it finished")
            metrics.RECOVERY_REBUILDING.set(1)
            return REBUILDING
        if not state_now:
            if not await asyncio.to_thread(committed_offsets, self.settings, 10.0, self._admin()):
                await self.client.hset(STATUS_KEY, mapping={"state": READY, "window": COMPLETE})  # a new fleet
                metrics.RECOVERY_REBUILDING.set(0)
                return "new"
            metrics.RECOVERY_REBUILDING.set(1)
            self._start_rebuild("Redis has no hot view status: the view was lost")
            return "lost"
        if int(status.get("checkpoint") or 0) < self.last_id:
            metrics.RECOVERY_REBUILDING.set(1)
            self._start_rebuild(f"the view reflects checkpoint {status.get('checkpoint')}, older than {self.last_id}")
            return "stale"
        metrics.RECOVERY_REBUILDING.set(0)
        return READY

    def _start_rebuild(self, reason: str) -> None:
        if self._rebuild is not None:
            return
        log.warning("hot view incomplete: rebuilding it", reason=reason)
        metrics.RECOVERY_ACTIONS.labels("hot view rebuild", "started").inc()
        self._rebuild_reason = reason
        actor = f"worker:{socket.gethostname()}:{os.getpid()}"
        command = [sys.executable, "-m", "guardian.cli", "recover", "hot-view", "--quiet", "--reason", reason,
                   "--actor", actor]  # fmt: skip
        self._rebuild = subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        if self._rebuild is not None and self._rebuild.poll() is None:
            self._rebuild.terminate()  # the lock expires; the next leader starts over
        if self._reader_client is not None:
            self._reader_client.close()
