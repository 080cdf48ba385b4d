"""`guardian worker` and `guardian dlq inspect | replay`."""

from __future__ import annotations

import sys

import click

from guardian.settings import get_settings


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", default=None, help="Faust log level (default: GUARDIAN_LOG_LEVEL).")
def worker(loglevel: str | None) -> None:
    """Start one Faust worker of the fleet (same as `faust -A guardian.stream_processors.app worker`)."""
    from guardian.stream_processors.alerts.rules import RulesError, load_rules

    settings = get_settings()
    try:  # a bad rules file stops the worker here, with the rule and field named, not deep in Faust
        load_rules(settings.alert_rules_file)
    except RulesError as error:
        raise click.ClickException(str(error)) from None
    from guardian.stream_processors.app import app

    sys.argv = [
        "guardian-worker",
        "worker",
        "--loglevel",
        _faust_level(loglevel or settings.log_level),
        "--web-port",
        str(settings.worker_web_port),
        f"--web-bind={settings.worker_web_bind}",
    ]
    app.main()


def _faust_level(level: str) -> str:
    """Faust knows crit/error/warn/info/debug; the settings use the stdlib names."""
    level = level.lower()
    return {"critical": "crit", "warning": "warn"}.get(level, level)


@click.group()
def dlq() -> None:
    """Inspect and replay the dead-letter topic."""


@dlq.command()
@click.option("--limit", type=int, default=50, show_default=True, help="Most records to show.")
def inspect(limit: int) -> None:
    """Print dead-letter records readably: why, where from, when, and the bytes."""
    from guardian.stream_processors.dlq_tools import read_dlq

    settings = get_settings()
    records = read_dlq(settings, limit)
    for record in records:
        h = record.headers
        click.echo(
            f"{record.partition}:{record.offset}  {h.get('error.class', '?')}: {h.get('error.message', '')}\n"
            f"    from {h.get('source.topic')}[{h.get('source.partition')}]@{h.get('source.offset')}"
            f" at {h.get('failed.at')}\n    bytes ({len(record.value)}): {record.value[:48].hex()}"
            f"{'...' if len(record.value) > 48 else ''}"
        )
    click.echo(f"dlq: {len(records)} record(s) shown")


@dlq.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def replay(yes: bool) -> None:
    """Re-submit dead-letter records not replayed before to the events topic (after a fix). Audited, also
    when there is nothing to replay or the confirmation is declined."""
    from guardian.sinks.audit import audited
    from guardian.stream_processors.dlq_tools import offset_ranges, read_dlq, replay_group, replay_records

    settings = get_settings()
    target = f"{settings.dlq_topic} -> {settings.events_topic}"
    with audited(settings.postgres_dsn, "dlq replay", target=target, params={"yes": yes}) as entry:
        records = read_dlq(settings, limit=None, group=replay_group(settings))
        entry.outcome.update(pending=len(records), sent=0, offsets=offset_ranges(records))
        if not records:
            click.echo("dlq: nothing to replay")
            return
        if not yes:
            click.confirm(f"re-submit {len(records)} record(s) to {settings.events_topic}?", abort=True)
        entry.outcome["sent"] = sent = replay_records(settings, records)
    click.echo(f"dlq: re-submitted {sent} record(s) to {settings.events_topic}")
