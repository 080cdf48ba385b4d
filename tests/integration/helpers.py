"""Helpers for integration tests: real worker processes, polling with deadlines, store queries."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from guardian.settings import Settings
from guardian.sinks.databases import create_database, drop_database, in_database
from guardian.sinks.roles import ensure_app_role
from guardian.stack.process import free_port

GUARDIAN = str(Path(sys.executable).with_name("guardian"))
WORKER_GROUP_PREFIXES = ("test-worker-", "test-restart-", "test-fleet-")  # groups tests create
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
        last = condition()
    return last


class WorkerProcess:
    """A real `guardian worker` on its own topic and consumer group."""

    def __init__(self, topic: str, tmp_path: Path, group: str | None = None, extra_env: dict | None = None) -> None:
        self.port = free_port()
        self.group = group or f"test-worker-{uuid.uuid4().hex[:8]}"
        self.log_path = tmp_path / f"worker-{self.port}.log"
        self.env = {
            **os.environ,
            "GUARDIAN_EVENTS_TOPIC": topic,
            "GUARDIAN_WORKER_GROUP": self.group,
            "GUARDIAN_WORKER_WEB_PORT": str(self.port),
            "GUARDIAN_WORKER_DATA_DIR": str(tmp_path / f"worker-data-{self.port}"),
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([GUARDIAN, "worker"], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.process.send_signal(sig)  # type: ignore[union-attr]
            self.process.wait(timeout=60)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            try:
                self.process.wait(timeout=30)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.kill()


def pg_fetchval(dsn: str, query: str, *args: object) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


async def fetch_rows(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def rows_for_producer(settings: Settings, producer_id: str) -> int:
    return int(
        pg_fetchval(settings.postgres_dsn, "SELECT count(*) FROM guardian_events WHERE producer_id = $1", producer_id)
    )  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScratchDb:
    name: str
    admin: str  # the owner's DSN
    app: str  # the application role's: it may read and append, never change the audit trail

    def env(self) -> dict[str, str]:
        return {"GUARDIAN_POSTGRES_DSN": self.app, "GUARDIAN_POSTGRES_ADMIN_DSN": self.admin}


@contextmanager
def scratch_database(settings: Settings, prefix: str, *, migrate: bool = True) -> Iterator[ScratchDb]:
    """A database of the test's own on the stack's server, with the schema and an application role that is
    not the owner (one made for tests when the settings name a single role), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = asyncio.run(create_database(settings.postgres_admin_dsn, name, migrate=migrate))
    app = in_database(settings.postgres_dsn, name)
    if settings.postgres_dsn == settings.postgres_admin_dsn:
        parts = urlsplit(app)
        app = urlunsplit(parts._replace(netloc=f"guardian_test_app:{uuid.uuid4().hex}@{parts.hostname}:{parts.port}"))
    try:
        if migrate:
            asyncio.run(ensure_app_role(admin, app))
        yield ScratchDb(name, admin, app)
    finally:
        asyncio.run(drop_database(settings.postgres_admin_dsn, name))
