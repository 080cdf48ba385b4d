"""`guardian`: the one command line for every operation of the platform.

Sub-commands live next to the code they drive and are imported only when used,
so `guardian stack status` does not pay for importing Faust.
"""

from __future__ import annotations

import importlib
import sys

import click
from pydantic import ValidationError

from guardian.errors import GuardianError
from guardian.logs import configure_logging
from guardian.settings import REPO_ROOT, describe_config_error, get_settings

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "stack": "guardian.stack.cli:stack",
    "settings": "guardian.settings_cli:settings",
    "schemas": "guardian.schemas.cli:schemas",
    "spool": "guardian.producers.cli:spool",
    "worker": "guardian.stream_processors.cli:worker",
    "dlq": "guardian.stream_processors.cli:dlq",
    "alerts": "guardian.stream_processors.alerts.cli:alerts",
    "recover": "guardian.stream_processors.recovery.cli:recover",
    "replay": "guardian.stream_processors.replay.cli:replay",
    "offsets": "guardian.stream_processors.replay.cli:offsets",
    "verify": "guardian.stream_processors.consistency.cli:verify",
    "audit": "guardian.audit_cli:audit",
    "demo": "guardian.demo:demo",
    "bench": "bench.cli:bench",
    "api": "guardian.api.cli:api",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        if module_name.startswith("bench.") and (REPO_ROOT / "bench").is_dir() and str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))  # the benchmarks live in the checkout, not in the package
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != "bench":
                raise
            raise click.ClickException("`guardian bench` runs from a checkout of the repository") from None
        return getattr(module, attribute)


@click.group(cls=LazyGroup)
@click.version_option(package_name="guardian-ingestion")
def cli() -> None:
    """Guardian ingestion platform."""
    try:
        settings = get_settings()
    except ValidationError as error:
        raise click.ClickException(describe_config_error(error)) from None
    configure_logging(settings.log_level, settings.log_format)


def main() -> None:
    try:
        cli()
    except GuardianError as error:  # said plainly: what is wrong and what to do, no traceback
        click.echo(f"guardian: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # `python -m guardian.cli`: how a worker starts a rebuild in a child process
    main()
