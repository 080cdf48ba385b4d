"""`guardian stack up | down | status | start | stop`."""

from __future__ import annotations

import sys

import click

from guardian.settings import get_settings
from guardian.stack.errors import StackError

SERVICES = click.Choice(["kafka", "redis", "postgres"])


def _stack():  # imported lazily: the services pull in confluent-kafka and asyncpg
    from guardian.stack.manager import Stack

    return Stack(get_settings())


def _fail(error: StackError) -> None:
    click.echo(f"guardian stack: {error}", err=True)
    sys.exit(2)


@click.group()
def stack() -> None:
    """Run the real local services (Kafka KRaft, Redis, PostgreSQL) without Docker."""


@stack.command()
def up() -> None:
    """Start every service (installing and downloading what is missing), then report health."""
    try:
        _stack().up()
    except StackError as error:
        _fail(error)
    sys.exit(_print_status())


@stack.command()
def init() -> None:
    """Apply database migrations, make the application's role, reconcile the storage policy and create
    the topics on the configured services; start nothing. Audited."""
    from guardian.sinks.audit import audited

    settings = get_settings()
    actions: list[str] = []

    def report(line: str) -> None:
        click.echo(line)
        actions.append(line.strip())

    params = {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "retention_days": settings.retention_days,
        "chunk_hours": settings.chunk_hours,
        "compress_after_hours": settings.compress_after_hours,
    }
    try:
        with audited(settings.postgres_dsn, "stack init", target=_database(), params=params) as entry:
            entry.outcome["actions"] = actions
            _stack().init(report=report)
    except StackError as error:
        _fail(error)


@stack.command()
def down() -> None:
    """Stop exactly the processes `up` started, by pid. Audited (the row is written before PostgreSQL stops)."""
    _stop_audited("stack down", None)


@stack.command()
def status() -> None:
    """Print each service, its address and health; exit 1 when one is not healthy."""
    sys.exit(_print_status())


@stack.command()
@click.argument("service", type=SERVICES)
def start(service: str) -> None:
    """Start one service (fault tests stop and start them one at a time)."""
    try:
        _stack().up(only=service)
    except StackError as error:
        _fail(error)


@stack.command()
@click.argument("service", type=SERVICES)
def stop(service: str) -> None:
    """Stop one service. Audited, as `down` is."""
    _stop_audited("stack stop", service)


def _database() -> str:
    return get_settings().postgres_admin_dsn.rsplit("@", 1)[-1]  # never a password


def _stop_audited(action: str, only: str | None) -> None:
    """Stop the services, writing the audit row while PostgreSQL still runs: after the others stopped and
    before it stops. A PostgreSQL that is not running leaves a log line instead of the row, and the stop
    goes on."""
    from guardian.sinks.audit import audited

    stack = _stack()
    names = stack.stop_order(only)
    stopped: dict[str, str] = {}
    with audited(get_settings().postgres_dsn, action, target=",".join(names), params={"services": names}) as entry:
        entry.outcome["services"] = stopped
        for name in names:
            if name == "postgres":
                stopped[name] = "stopping after this row"
                break
            stopped[name] = "stopped" if stack.stop_one(name, click.echo) else "was not running"
    if "postgres" in names:
        stack.stop_one("postgres", click.echo)


def _print_status() -> int:
    from guardian.stack.health import probe_all

    settings = get_settings()
    stack = _stack()
    pids = stack.pids()
    probes = probe_all(settings)
    click.echo(f"{'service':<9} {'address':<36} {'pid':>7}  {'health':<9} detail")
    for probe in probes:
        # The local service's pid only when the settings point at it, not beside another server's address.
        local = stack.services[probe.name].address in probe.address
        pid = pids.get(probe.name) if local else None
        click.echo(f"{probe.name:<9} {probe.address:<36} {pid or '-':>7}  {probe.health:<9} {probe.detail}")
    return 0 if all(p.healthy for p in probes) else 1
