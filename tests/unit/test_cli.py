"""The `guardian` command from a checkout, run from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GUARDIAN = str(Path(sys.executable).with_name("guardian"))


def test_bench_runs_from_the_checkout_whatever_the_working_directory(tmp_path):
    result = subprocess.run([GUARDIAN, "bench", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    # Every bench the docs name (a decorator lost in a merge once left `guardian bench soak` unregistered).
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"producer", "pipeline", "recovery", "consistency", "api", "peers", "soak", "faults", "all"}


def test_a_guardian_error_is_one_line_without_a_traceback(tmp_path):
    result = subprocess.run(
        [GUARDIAN, "api"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GUARDIAN_POSTGRES_PORT": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        "guardian: PostgreSQL (postgresql://guardian_app@127.0.0.1:1/guardian) is unreachable"
    )
    assert len(result.stderr.strip().splitlines()) == 1
