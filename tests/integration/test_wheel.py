"""The product as a pip-installed wheel, away from the checkout: what a trading host or an image gets.

The wheel is built from this checkout and installed without dependencies into a fresh virtual
environment whose only other path is this environment's site-packages (the dependencies, already
installed: no network). Everything then runs from a directory that is not the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from guardian.settings import REPO_ROOT, Settings
from tests.integration.helpers import pg_fetchval, scratch_database


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a venv holding only the wheel."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(REPO_ROOT)],
        check=True,
        timeout=600,
    )
    [wheel] = (root / "dist").glob("guardian_ingestion-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    target_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies from here; a plain path in a .pth adds no editable finder of the checkout.
    Path(target_site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    return root / "venv" / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True, text=True, timeout=120, cwd=cwd, env={**clean, **(env or {})},
    )  # fmt: skip


def test_one_namespace_and_nothing_generic_in_site_packages(installed: Path, tmp_path: Path):
    result = _run(
        installed, "python", "-c",
        "import guardian.producers, guardian.sinks.storage, guardian.api.app, importlib.util as u, sysconfig;"
        "print(guardian.producers.__file__);"
        "print([m for m in ('producers', 'sinks', 'schemas', 'api', 'stream_processors', 'bench')"
        " if u.find_spec(m)])",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    location, generic = result.stdout.splitlines()
    assert location.startswith(str(installed.parent)) and str(REPO_ROOT) not in location
    assert generic == "[]"


def test_the_worker_validates_the_shipped_rules_outside_the_checkout(installed: Path, tmp_path: Path):
    result = _run(installed, "guardian", "alerts", "check-rules", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "default rules:" in result.stdout and "rule(s) valid" in result.stdout


def test_the_producer_spools_under_the_state_directory_not_site_packages(installed: Path, tmp_path: Path):
    state = tmp_path / "state"
    result = _run(
        installed, "python", "-c",
        "from guardian.producers import GuardianProducer;"
        "p = GuardianProducer(producer_id='wheel-test', bootstrap_servers='127.0.0.1:1');"
        "print(p._spool.directory); p.close(timeout=0)",
        cwd=tmp_path, env={"XDG_STATE_HOME": str(state)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(state / "guardian" / "spool" / "wheel-test")


def test_the_migrations_apply_from_the_wheel(installed: Path, tmp_path: Path, settings: Settings):
    with scratch_database(settings, "guardian_wheel", migrate=False) as db:
        result = _run(
            installed, "python", "-c",
            f"import asyncio; from guardian.sinks.migrations import apply_migrations;"
            f"print(asyncio.run(apply_migrations({db.admin!r})))",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "0001_events" in result.stdout and "0004_audit_chain" in result.stdout
        assert pg_fetchval(db.admin, "SELECT value FROM guardian_meta WHERE key = 'storage_mode'")


def test_a_restore_and_the_recovery_commands_work_from_the_wheel(installed: Path, tmp_path: Path):
    result = _run(
        installed, "python", "-c",
        "from guardian.producers import GuardianProducer;"
        "p = GuardianProducer(producer_id='wheel-restore', bootstrap_servers='127.0.0.1:1');"
        "s = p.restore(['AAA'], timeout_s=1.0); print(s.degraded, s.source); p.close(timeout=0)",
        cwd=tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "state"), "GUARDIAN_REDIS_URL": "redis://127.0.0.1:1/0",
                           "GUARDIAN_POSTGRES_DSN": "postgresql://g@127.0.0.1:1/x"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True none"
    listed = _run(installed, "guardian", "recover", "--help", cwd=tmp_path)
    assert listed.returncode == 0 and "hot-view" in listed.stdout, listed.stderr


def test_bench_says_it_needs_the_checkout(installed: Path, tmp_path: Path):
    result = _run(installed, "guardian", "bench", "producer", cwd=tmp_path)
    assert result.returncode != 0
    assert "runs from a checkout" in result.stderr


def _vendor_files() -> list[str]:
    """What deploy/local/web-assets.sh puts in api/static/vendor/: the lock's FILES column, PATH[=NAME]."""
    names = []
    for line in (REPO_ROOT / "api" / "static" / "vendor.lock").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            for spec in line.split()[3:]:
                path, _, name = spec.partition("=")
                names.append(name or path.rsplit("/", 1)[-1])
    return names


def test_the_dashboard_assets_are_in_the_wheel(installed: Path, tmp_path: Path):
    expected = _vendor_files()
    assert {"htmx.min.js", "htmx-ext-sse.min.js", "uPlot.iife.min.js", "swagger-ui-bundle.js"} <= set(expected)
    result = _run(
        installed, "python", "-c",
        "import importlib.resources as r, sys; v = r.files('guardian.api') / 'static' / 'vendor';"
        "print('\\n'.join(p for p in sys.argv[1:] if not (v / p).is_file() or not (v / p).read_bytes()))",
        *expected, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    missing = result.stdout.split()
    assert not missing, (
        f"the wheel lacks the dashboard's vendored files {missing}: api/static/vendor/ was not filled when it was "
        "built; run `make setup` (bash deploy/local/web-assets.sh) and build again"
    )
