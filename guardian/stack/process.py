"""Start and stop the stack's own processes by pid, never by name.

Each service writes `<stack>/run/<name>.pid` holding the pid and the process's
start time (from /proc/<pid>/stat). A pid is ours only while both still match,
so a recycled pid of some unrelated process is never signalled. (The command
line is no proof: Redis and PostgreSQL rewrite their process titles.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from guardian.stack.errors import StackError


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    run_dir: Path
    log_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed and reported)."""
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def uptime_s(self) -> float | None:
        """Seconds since our process started, or None when it is not running."""
        pid = self.pid()
        started = _start_time(pid) if pid is not None else None
        if started is None:
            return None
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
        return round(since_boot - int(started) / os.sysconf("SC_CLK_TCK"), 1)

    def stale_pid_file(self) -> bool:
        """True when a pid file exists but its process is gone: the last run crashed or was killed."""
        return self.pid_file.exists() and self.pid() is None

    def start_note(self) -> str | None:
        """None when our process already runs; otherwise the word for the start about to happen."""
        if self.pid() is not None:
            return None
        return "recovered after a crash (stale pid file)" if self.stale_pid_file() else "started"

    def spawn(self, argv: Sequence[str], env: dict[str, str] | None = None, user: str | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # survives the CLI exiting; not killed by the terminal's ^C
                user=user,
            )
        self.pid_file.write_text(f"{process.pid} {_start_time(process.pid)}\n")
        return process.pid

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> bool:
        """Signal our process and wait for it to exit; SIGKILL after `timeout`. False if none ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, sig)
        if not wait_until(lambda: _start_time(pid) is None, timeout):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: _start_time(pid) is None, 10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A loopback port nobody listens on right now (for test and benchmark workers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_port_free(port: int, service: str, setting: str) -> None:
    if port_open(port):
        raise StackError(
            f"{service}: port {port} on 127.0.0.1 is already in use by a process this stack did not start. "
            f"Stop that process (`ss -ltnp 'sport = :{port}'` shows it) or choose another port with {setting}=<port>."
        )
