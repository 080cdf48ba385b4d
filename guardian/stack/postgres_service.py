"""PostgreSQL from Debian's package, its own cluster under the stack dir, TimescaleDB when installed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from guardian.settings import OWNER_ROLE, Settings
from guardian.stack.errors import StackError
from guardian.stack.layout import StackLayout
from guardian.stack.process import ManagedProcess, ensure_port_free, port_open, wait_until
from guardian.stack.system import postgres_bin_dir

DATABASE = "guardian"
ROLE = OWNER_ROLE  # initdb's bootstrap superuser: owns the schema


class PostgresService:
    name = "postgres"

    def __init__(self, settings: Settings, layout: StackLayout) -> None:
        self.settings = settings
        # PostgreSQL refuses to run as root; then it runs as the `postgres` user, which must be
        # able to reach its data dir. A checkout under a private home is not, so fall back to /var/tmp.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.home = self._home(layout.data("postgres"))
        self.process = ManagedProcess("postgres", layout.run, layout.logs)

    def _home(self, preferred: Path) -> Path:
        if self.user is None or _reachable_by(preferred.parent, self.user):
            return preferred
        digest = hashlib.sha1(str(preferred).encode()).hexdigest()[:10]
        return Path("/var/tmp") / f"guardian-postgres-{digest}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.postgres_port}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def timescaledb_available(self, bin_dir: str) -> bool:
        sharedir = subprocess.run([f"{bin_dir}/pg_config", "--sharedir"], capture_output=True, text=True).stdout
        return Path(sharedir.strip(), "extension", "timescaledb.control").exists()

    def _initdb(self, bin_dir: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.user:
            _chown_tree(self.home, self.user)
        result = subprocess.run(
            [
                f"{bin_dir}/initdb",
                "-D",
                str(self.data),
                "-U",
                ROLE,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            user=self.user,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed for {self.data}:\n{result.stdout}{result.stderr}")

    def preflight(self) -> None:
        if self.process.pid() is None:
            ensure_port_free(self.settings.postgres_port, "postgres", "GUARDIAN_POSTGRES_PORT")

    def start(self) -> str:
        note = self.process.start_note()
        if note is None:
            return "already running"
        bin_dir = postgres_bin_dir()
        if not (self.data / "PG_VERSION").exists():
            if self.data.exists() and any(self.data.iterdir()):
                raise StackError(
                    f"{self.data} exists but is not a PostgreSQL cluster (an interrupted initdb?). "
                    f"Remove it and run `guardian stack up` again."
                )
            self._initdb(bin_dir)
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.settings.postgres_port}",
            "-c",
            f"unix_socket_directories={self.home}",
            "-c",
            "timezone=UTC",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "max_connections=200",
            # The stack is for development and tests: fsync stays on so a crash test is honest,
            # but commits need not wait for it.
            "-c",
            "synchronous_commit=off",
            # On a small machine an autovacuum run shows as a latency blip elsewhere; this places it.
            "-c",
            "log_autovacuum_min_duration=250ms",
        ]
        if self.timescaledb_available(bin_dir):
            options += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
        self.process.spawn([f"{bin_dir}/postgres", "-D", str(self.data), *options], user=self.user)
        if not wait_until(self._ready, timeout=60):
            raise StackError(f"PostgreSQL did not start. Last log lines:\n{self.process.log_tail()}")
        asyncio.run(self._ensure_database())
        return note

    def _ready(self) -> bool:
        if self.process.pid() is None:
            raise StackError(f"PostgreSQL exited during start-up. Last log lines:\n{self.process.log_tail()}")
        return port_open(self.settings.postgres_port)

    async def _ensure_database(self) -> None:
        import asyncpg

        admin_dsn = f"postgresql://{ROLE}@127.0.0.1:{self.settings.postgres_port}/postgres"
        for _ in range(50):  # the port opens slightly before the server accepts logins
            try:
                conn = await asyncpg.connect(admin_dsn, timeout=5)
                break
            except (asyncpg.CannotConnectNowError, ConnectionError, OSError):
                await asyncio.sleep(0.1)
        else:
            raise StackError(f"PostgreSQL accepts no connections on {self.address}")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    def stop(self) -> bool:
        # SIGINT = PostgreSQL's "fast" shutdown: aborts open sessions, writes a clean checkpoint.
        return self.process.stop(sig=signal.SIGINT, timeout=60)


def _reachable_by(path: Path, user: str) -> bool:
    if not path.exists():
        return _reachable_by(path.parent, user)
    test = shutil.which("test") or "/usr/bin/test"  # PATH may be minimal; coreutils' test is always there
    return subprocess.run([test, "-x", str(path)], user=user).returncode == 0


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)
