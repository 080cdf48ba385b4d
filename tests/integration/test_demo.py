"""`guardian demo` end to end: the simulated trading host through a real worker into PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess

from guardian.settings import Settings
from tests.integration.helpers import GUARDIAN, free_port


def test_demo_stores_everything_it_emits(settings: Settings, tmp_path):
    env = {
        **os.environ,
        "GUARDIAN_WORKER_GROUP": "demo-test",
        "GUARDIAN_WORKER_WEB_PORT": str(free_port()),
        "GUARDIAN_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "GUARDIAN_SPOOL_DIR": str(tmp_path / "spool"),
    }
    result = subprocess.run([GUARDIAN, "demo", "--seconds", "8"], capture_output=True, text=True, timeout=300, env=env)
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"demo: emitted=(\d+) stored=(\d+) lost=(-?\d+)", last)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    emitted, stored, lost = map(int, match.groups())
    assert result.returncode == 0
    assert emitted > 5000  # ~1,000/s base rate with bursts
    assert stored == emitted and lost == 0
    assert "lag" in result.stdout and "emitted" in result.stdout  # the live status line
