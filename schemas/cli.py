"""`guardian schemas check`: refuse an incompatible schema change before it ships."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from guardian.schemas.codec import RELEASED_DIR, SCHEMA_DIR
from guardian.schemas.compat import Mode, check


@click.group()
def schemas() -> None:
    """Avro schemas: compatibility with the released versions."""


@schemas.command(name="check")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default="BACKWARD", show_default=True)
@click.option("--schemas-dir", type=click.Path(exists=True, path_type=Path), default=SCHEMA_DIR, hidden=True)
@click.option("--released-dir", type=click.Path(exists=True, path_type=Path), default=RELEASED_DIR, hidden=True)
def check_command(mode: str, schemas_dir: Path, released_dir: Path) -> None:
    """Compare schemas/avro/*.avsc with the last released version in schemas/released/."""
    verdicts = check(schemas_dir, released_dir, Mode(mode))
    for verdict in verdicts:
        click.echo(verdict.describe())
    sys.exit(0 if all(v.compatible for v in verdicts) else 1)
