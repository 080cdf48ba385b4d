"""Pid ownership and prerequisite checks of the local stack (no services needed)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from guardian.stack.errors import StackError
from guardian.stack.process import ManagedProcess, ensure_port_free
from guardian.stack.system import _java_major


def test_spawned_process_is_ours_until_it_exits(tmp_path):
    managed = ManagedProcess("sleeper", tmp_path / "run", tmp_path / "logs")
    pid = managed.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    assert managed.pid() == pid
    assert 0 <= managed.uptime_s() < 30  # seconds since this start, not since boot
    assert managed.stop(timeout=5) is True
    assert managed.pid() is None
    assert managed.uptime_s() is None
    assert not managed.pid_file.exists()


def test_recycled_pid_is_not_ours(tmp_path):
    """A pid file whose pid now belongs to another process (different start time) is stale, not ours."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        managed = ManagedProcess("ghost", tmp_path / "run", tmp_path / "logs")
        managed.run_dir.mkdir(parents=True)
        managed.pid_file.write_text(f"{other.pid} 1\n")  # right pid, wrong start time
        assert managed.pid() is None
        assert managed.stale_pid_file()
        assert managed.stop() is False  # never signals a process it did not start
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_port_in_use_names_the_port_and_the_setting():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError, match=rf"port {port}.*already in use.*GUARDIAN_REDIS_PORT"):
            ensure_port_free(port, "redis", "GUARDIAN_REDIS_PORT")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_java_version_parsing(output, major):
    assert _java_major(output) == major
