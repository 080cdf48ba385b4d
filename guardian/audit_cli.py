"""`guardian audit list | verify`: read the audit trail, check its hash chain."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from guardian.cli_kit import parse_time
from guardian.settings import get_settings

COLUMNS = "id, at, actor, action, target, status, detail, duration_s"


def list_query(since: datetime | None, actor: str | None, action: str | None, limit: int) -> tuple[str, list]:
    """Newest first; `actor` and `action` match as substrings."""
    conditions: list[str] = []
    args: list[Any] = []
    for template, value in (
        ("at >= ${}", since),
        ("strpos(actor, ${}) > 0", actor),
        ("strpos(action, ${}) > 0", action),
    ):
        if value is not None:
            args.append(value)
            conditions.append(template.format(len(args)))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit)
    return f"SELECT {COLUMNS} FROM guardian_audit{where} ORDER BY id DESC LIMIT ${len(args)}", args


def status_text(status: int | None, action: str) -> str:
    """0/1 for commands (ok/FAILED); an HTTP status for API calls."""
    if status is None:
        return "-"
    if " /" in action:  # "GET /v1/events": the API's rows
        return str(status)
    return {0: "ok", 1: "FAILED"}.get(status, str(status))


def row_dict(row: Any) -> dict[str, Any]:
    return {**dict(row), "at": row["at"].astimezone(UTC).isoformat(), "detail": json.loads(row["detail"])}


def row_line(row: dict[str, Any]) -> str:
    duration = "" if row["duration_s"] is None else f"{row['duration_s']:.3f}s"
    at = row["at"].replace("+00:00", "Z")
    detail = json.dumps(row["detail"], separators=(",", ":"))
    return (
        f"{row['id']:>7}  {at:<27}  {row['actor']:<24} {row['action']:<30} "
        f"{status_text(row['status'], row['action']):<6} {duration:>9}  {row['target'] or '-'}  {detail}"
    )


async def _fetch(dsn: str, query: str, args: list) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return [row_dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


@click.group()
def audit() -> None:
    """The audit trail: who changed or looked at what, and whether the trail is intact."""


@audit.command("list")
@click.option("--since", default=None, help="Rows from then on: a duration (30m, 2h, 7d) or a time (UTC if no offset).")
@click.option("--actor", default=None, help="Rows whose actor contains this (user@host, token:..., worker:...).")
@click.option("--action", default=None, help="Rows whose action contains this (e.g. replay, silence, GET /v1).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most rows, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_rows(since: str | None, actor: str | None, action: str | None, limit: int, as_json: bool) -> None:
    """Audit rows, newest first."""
    since_at = datetime.fromtimestamp(parse_time(since), UTC) if since else None
    query, args = list_query(since_at, actor, action, limit)
    rows = asyncio.run(_fetch(get_settings().postgres_dsn, query, args))
    for row in rows:
        click.echo(json.dumps(row, default=str) if as_json else row_line(row))
    if not as_json:
        click.echo(f"{len(rows)} row(s)", err=True)


@audit.command()
@click.option(
    "--anchor",
    default=None,
    metavar="ID:HASH",
    help="A head printed by an earlier verify and kept elsewhere: the chain must still pass through it, which "
    "also catches rows deleted at the end.",
)
def verify(anchor: str | None) -> None:
    """Check the hash chain: exit 0 when every row is intact, 1 naming the first row edited or whose
    predecessor was deleted."""
    from guardian.sinks.audit_chain import Anchor
    from guardian.sinks.audit_chain import verify as verify_chain

    try:
        expected = Anchor.parse(anchor) if anchor else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--anchor") from None
    check, warnings = asyncio.run(verify_chain(get_settings().postgres_dsn, expected))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if check.broken is not None:
        click.echo(
            f"audit chain BROKEN at row {check.broken.id}: {check.broken.reason} "
            f"({check.rows:,} row(s) before it intact)",
            err=True,
        )
        sys.exit(1)
    if check.rows == 0:
        click.echo("audit chain intact: 0 rows")
        return
    click.echo(
        f"audit chain intact: {check.rows:,} row(s), ids {check.first_id}..{check.last_id}\n"
        f"head {check.last_id}:{check.head.hex()}  (keep it elsewhere; `--anchor` it later)"  # type: ignore[union-attr]
    )
