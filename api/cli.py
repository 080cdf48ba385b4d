"""`guardian api`: serve the query API; `guardian api token create|list|revoke` manages its tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from guardian.settings import get_settings

T = TypeVar("T")


@click.group(invoke_without_command=True)
@click.pass_context
def api(ctx: click.Context) -> None:
    """Serve the query API and the dashboard (needs an admin token: `guardian api token create`)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from guardian.api.app import create_app, ensure_can_start

    settings = get_settings()
    asyncio.run(ensure_can_start(settings))
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning")


@api.group()
def token() -> None:
    """Create, list and revoke API tokens (viewer < operator < admin)."""


def _with_pool(work: Callable[..., Awaitable[T]]) -> T:
    import asyncpg

    async def run() -> T:
        conn = await asyncpg.connect(get_settings().postgres_dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


@token.command("create")
@click.option("--name", required=True, help="Unique forever: the audit trail names the token's calls by it.")
@click.option(
    "--role", type=click.Choice(["viewer", "operator", "admin"]), required=True,
    help="viewer reads; operator also silences and starts replays/repairs; admin also manages tokens.",
)  # fmt: skip
def create(name: str, role: str) -> None:
    """Create a token and print it once (only a salted hash is stored)."""
    from guardian.api import tokens
    from guardian.sinks.audit import audited, operator

    settings = get_settings()
    with audited(settings.postgres_dsn, "api token create", target=name, params={"role": role}) as entry:
        secret = _with_pool(lambda db: tokens.create(db, name, tokens.Role.parse(role), created_by=operator()))
        entry.outcome = {"role": role}
    click.echo(secret)
    click.echo(f"# {role} token {name!r}: shown once, store it now", err=True)


@token.command("list")
def list_tokens() -> None:
    """Every token ever made: name, role, when and by whom, revoked or not (never the secret)."""
    from guardian.api import tokens

    rows = _with_pool(tokens.listing)
    click.echo(f"{'ID':<11} {'NAME':<24} {'ROLE':<9} {'CREATED':<20} {'BY':<24} REVOKED")
    for t in rows:
        revoked = f"{t.revoked_at:%Y-%m-%d %H:%M:%S} by {t.revoked_by}" if t.revoked_at else "-"
        click.echo(
            f"{t.id:<11} {t.name:<24} {t.role:<9} {t.created_at:%Y-%m-%d %H:%M:%S}  {t.created_by:<24} {revoked}"
        )


@token.command("revoke")
@click.argument("name_or_id")
def revoke(name_or_id: str) -> None:
    """Revoke a token by name or id (API processes stop accepting it within 5 s)."""
    from guardian.api import tokens
    from guardian.sinks.audit import audited, operator

    settings = get_settings()
    with audited(settings.postgres_dsn, "api token revoke", target=name_or_id):
        info = _with_pool(lambda db: tokens.revoke(db, name_or_id, revoked_by=operator()))
    click.echo(f"revoked {info.role} token {info.name!r} ({info.id})")
