"""Redis from Debian's package, run as the stack's own process with append-only persistence."""

from __future__ import annotations

from guardian.settings import Settings
from guardian.stack.errors import StackError
from guardian.stack.layout import StackLayout
from guardian.stack.process import ManagedProcess, ensure_port_free, port_open, wait_until
from guardian.stack.system import redis_server_binary


class RedisService:
    name = "redis"

    def __init__(self, settings: Settings, layout: StackLayout) -> None:
        self.settings = settings
        self.home = layout.data("redis")
        self.process = ManagedProcess("redis", layout.run, layout.logs)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.redis_port}"

    def preflight(self) -> None:
        if self.process.pid() is None:
            ensure_port_free(self.settings.redis_port, "redis", "GUARDIAN_REDIS_PORT")

    def start(self) -> str:
        note = self.process.start_note()
        if note is None:
            return "already running"
        binary = redis_server_binary()
        self.home.mkdir(parents=True, exist_ok=True)
        port = str(self.settings.redis_port)
        self.process.spawn(
            [
                binary,
                "--port",
                port,
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.home),
                # AOF with fsync every second: the hot view survives a restart, at ~1 s of exposure.
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                # Each AOF rewrite forks Redis and burns a core for a second; on a 2-core host that shows
                # up as emit->Redis latency spikes, so rewrite when the AOF is 4x (not 2x) its base.
                "--auto-aof-rewrite-percentage",
                "300",
                "--auto-aof-rewrite-min-size",
                "256mb",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ]
        )
        if not wait_until(lambda: self._ready(port), timeout=20):
            raise StackError(f"Redis did not start. Last log lines:\n{self.process.log_tail()}")
        return note

    def _ready(self, port: str) -> bool:
        if self.process.pid() is None:
            raise StackError(f"Redis exited during start-up. Last log lines:\n{self.process.log_tail()}")
        return port_open(int(port))

    def stop(self) -> bool:
        return self.process.stop(timeout=30)
