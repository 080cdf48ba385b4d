"""The Quix Streams peer's virtualenv: `.stack/cache/quix-venv`, made on first use.

Quix Streams 3.28.1 requires confluent-kafka < 2.13 and ours is newer; installed beside the product it
would move the worker onto another librdkafka, so the bench measures it in a virtualenv of its own with
the project (its `producer` extra: the codec, the stores' helpers) and the `peers` extra of pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from guardian.settings import REPO_ROOT, Settings

SPEC = f"{REPO_ROOT}[producer,peers]"


def quix_python(settings: Settings) -> Path:
    """The virtualenv's python, after making or updating the virtualenv when pyproject.toml changed."""
    venv = settings.stack_dir.resolve() / "cache" / "quix-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = (REPO_ROOT / "pyproject.toml").read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    click.echo(f"  making the Quix Streams virtualenv in {venv} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", SPEC], capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise click.ClickException(f"pip could not install {SPEC} into {venv}:\n{tail}")
    stamp.write_text(wanted)
    return python


def quix_version(python: Path) -> dict:
    out = subprocess.run(
        [str(python), "-c", "import quixstreams, confluent_kafka as c; print(quixstreams.__version__, c.__version__,"
         " c.libversion()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return {"quixstreams": out[0], "confluent_kafka": out[1], "librdkafka": out[2]}
