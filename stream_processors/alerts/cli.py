"""`guardian alerts`: check a rules file, list active alerts, manage silences, read the alert history."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import click
import redis
import redis.asyncio as aredis

from guardian.cli_kit import iso, parse_duration
from guardian.settings import get_settings
from guardian.sinks import silences as silences_store
from guardian.sinks.audit import audited, operator
from guardian.stream_processors.alerts.history_cli import history
from guardian.stream_processors.alerts.outputs import ACTIVE_SET, ALERT_KEY
from guardian.stream_processors.alerts.rules import RulesError, load_rules

T = TypeVar("T")


@click.group()
def alerts() -> None:
    """Alert rules, active alerts and silences."""


@alerts.command("check-rules")
@click.argument("path", type=click.Path(path_type=Path), required=False)
def check_rules(path: Path | None) -> None:
    """Validate a rules file (default: GUARDIAN_ALERT_RULES_FILE) as a worker would at start."""
    path = path or get_settings().alert_rules_file
    try:
        rules = load_rules(path)
    except RulesError as error:
        raise click.ClickException(str(error)) from None
    for rule in rules.rules:
        click.echo(f"  {rule.severity}  {rule.name:<28} {rule.kind}")
    click.echo(f"{path or 'default rules'}: {len(rules.rules)} rule(s) valid")


def _client() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, decode_responses=True)


@alerts.command("list")
def list_alerts() -> None:
    """Alerts firing now, across the fleet."""
    client = _client()
    fingerprints = sorted(client.smembers(ACTIVE_SET))
    for body in client.mget([ALERT_KEY.format(fp) for fp in fingerprints]) if fingerprints else []:
        if body:
            alert = json.loads(body)
            muted = " (silenced)" if alert.get("silenced") else ""
            click.echo(f"{alert['severity']}  {alert['rule']:<24} {alert['fingerprint']}  {alert['summary']}{muted}")
    click.echo(f"{len(fingerprints)} alert(s) firing")


def _matchers(pairs: tuple[str, ...]) -> dict[str, str]:
    matchers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"{pair!r}: expected name=value (name: rule, severity or a label)")
        matchers[name] = value
    return matchers


def _with_stores(operation: Callable[[aredis.Redis, asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `operation` with the stack's Redis and PostgreSQL (the application role)."""

    async def main() -> T:
        settings = get_settings()
        client = aredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            conn = await asyncpg.connect(settings.postgres_dsn, timeout=10)
            try:
                return await operation(client, conn)
            finally:
                await conn.close()
        finally:
            await client.aclose()

    return asyncio.run(main())


@alerts.command()
@click.argument("matchers", nargs=-1, required=True)
@click.option("--for", "duration", default="1h", show_default=True, help="How long: 30m, 2h, 1d ...")
@click.option("--comment", default="", help="Why (shown by `guardian alerts silences`).")
def silence(matchers: tuple[str, ...], duration: str, comment: str) -> None:
    """Mute notifications of alerts matching every NAME=VALUE (e.g. rule=drift-sustained symbol=AAPL).
    Recorded in the silence history with you as its author. Audited."""
    seconds = parse_duration(duration)
    matched = _matchers(matchers)
    silence_id = silences_store.new_id()
    params = {"matchers": matched, "for": duration, "comment": comment}
    with audited(get_settings().postgres_dsn, "alerts silence", target=silence_id, params=params) as entry:
        try:
            made = _with_stores(
                lambda client, conn: silences_store.create(
                    client, conn, matched, created_by=operator(), duration_s=seconds, comment=comment,
                    silence_id=silence_id,
                )
            )  # fmt: skip
        except silences_store.SilenceError as error:
            raise click.ClickException(str(error)) from None
        until = made["expires_at"].strftime("%Y-%m-%d %H:%M:%S UTC")
        entry.outcome["until"] = until
    click.echo(f"silence {silence_id} until {until}")


@alerts.command()
@click.option("--history", "show_history", is_flag=True, help="All silences made (PostgreSQL), newest first, "
              "with who made them and who ended them early.")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most rows with --history.")
def silences(show_history: bool, limit: int) -> None:
    """Silences in force, with what they match, when they expire and who made them (expired ones are removed)."""
    if show_history:
        page = _with_stores(lambda client, conn: silences_store.history(conn, limit=limit))
        for row in page.items:
            matchers = " ".join(f"{k}={v}" for k, v in row["matchers"].items())
            ended = f"ended {iso(row['expired_at'].timestamp())} by {row['expired_by']}" if row["expired_at"] else (
                f"expires {iso(row['expires_at'].timestamp())}")  # fmt: skip
            click.echo(f"{row['id']}  {iso(row['starts_at'].timestamp())}  {row['created_by']:<24} {matchers}  "
                       f"{ended}  {row['comment']}")  # fmt: skip
        click.echo(f"{len(page.items)} silence(s)", err=True)
        return

    async def live(client: aredis.Redis) -> list[dict]:
        await silences_store.prune(client)
        return await silences_store.active(client)

    now = time.time()
    for row in asyncio.run(_redis_only(live)):
        matchers = " ".join(f"{k}={v}" for k, v in row["matchers"].items())
        left = (row["expires_at"].timestamp() - now) / 60
        click.echo(f"{row['id']}  {matchers}  expires in {left:.0f} min  by {row['created_by'] or '?'}  "
                   f"{row['comment']}")  # fmt: skip


async def _redis_only(operation: Callable[[aredis.Redis], Awaitable[T]]) -> T:
    client = aredis.Redis.from_url(get_settings().redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return await operation(client)
    finally:
        await client.aclose()


@alerts.command()
@click.argument("silence_id")
def unsilence(silence_id: str) -> None:
    """End a silence before it expires, recorded in its history. Audited (a silence that is not there: as failed)."""
    with audited(get_settings().postgres_dsn, "alerts unsilence", target=silence_id) as entry:

        async def end(client: aredis.Redis, conn: asyncpg.Connection) -> dict | None:
            live = await silences_store.get(client, silence_id)
            if live is None or not await silences_store.expire(client, conn, silence_id, by=operator()):
                return None
            return {"matchers": live.matchers, "expires_at_us": live.expires_at_us, "comment": live.comment,
                    "created_by": live.created_by}  # fmt: skip

        removed = _with_stores(end)
        if removed is None:
            raise click.ClickException(f"no silence {silence_id!r} in force (see `guardian alerts silences`)")
        entry.outcome["removed"] = removed
    click.echo(f"silence {silence_id} removed")


alerts.add_command(history)
