"""`guardian settings show | docs`: the effective settings, and the configuration page generated from them.

docs/configuration.md is this command's output (`guardian settings docs > docs/configuration.md`);
tests/unit/test_settings.py fails when the two differ, so the page cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path

import click
from pydantic.fields import FieldInfo

from guardian.settings import Settings, get_settings, masked

# Defaults that depend on where the process runs, said the way a reader can use them.
SHOWN_DEFAULTS = {
    "kafka_bootstrap": "127.0.0.1:<GUARDIAN_KAFKA_PORT>",
    "redis_url": "redis://127.0.0.1:<GUARDIAN_REDIS_PORT>/0",
    "postgres_dsn": "postgresql://guardian_app@127.0.0.1:<GUARDIAN_POSTGRES_PORT>/guardian",
    "postgres_admin_dsn": "postgresql://guardian@127.0.0.1:<GUARDIAN_POSTGRES_PORT>/guardian",
    "spool_dir": "$XDG_STATE_HOME/guardian/spool",
    "worker_data_dir": "$XDG_STATE_HOME/guardian/worker",
    "stack_dir": "<checkout>/.stack",
}
# The first setting of each section, in the order of the Settings class.
SECTIONS = {
    "kafka_bootstrap": "Kafka",
    "redis_url": "Stores",
    "producer_id": "Producer",
    "worker_web_bind": "Worker",
    "api_host": "API",
    "stack_dir": "Local stack (`guardian stack`, development and CI only)",
    "log_level": "Logging",
}
INTRO = """# Configuration

One settings object (`guardian/settings.py`), read from environment variables with the
`GUARDIAN_` prefix; a bad value is reported by variable name, and secrets have no default.
`guardian settings show` prints the values in effect. This page is generated from the settings
object by `guardian settings docs`.
"""


def _default(name: str, field: FieldInfo) -> str:
    if name in SHOWN_DEFAULTS:
        return f"`{SHOWN_DEFAULTS[name]}`"
    if field.default in (None, ""):
        return "*(none)*"
    return f"`{field.default}`"


def configuration_page() -> str:
    parts = [INTRO]
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            parts.append(f"\n## {SECTIONS[name]}\n\n| variable | default | meaning |\n| --- | --- | --- |\n")
        description = (field.description or "").replace("|", "\\|")
        parts.append(f"| `GUARDIAN_{name.upper()}` | {_default(name, field)} | {description} |\n")
    return "".join(parts)


@click.group()
def settings() -> None:
    """The settings in effect, and the configuration page."""


@settings.command()
def show() -> None:
    """Print every GUARDIAN_ variable's value in effect (secrets masked)."""
    current = get_settings()
    for name in Settings.model_fields:
        click.echo(f"GUARDIAN_{name.upper()}={masked(name, getattr(current, name))}")


@settings.command()
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Write here instead of stdout.")
def docs(output: Path | None) -> None:
    """Print the configuration page (docs/configuration.md) generated from the settings object."""
    page = configuration_page()
    if output is None:
        click.echo(page, nl=False)
    else:
        output.write_text(page)
