"""`guardian alerts history`: alert state changes (or notification attempts) from PostgreSQL, newest first."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import click

from guardian.cli_kit import parse_time
from guardian.settings import get_settings
from guardian.sinks import alert_history
from guardian.sinks.audit import audited


def _iso(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def change_line(row: dict[str, Any]) -> str:
    flags = ",".join(name for name in ("repeat", "silenced") if row[name]) or "-"
    return (
        f"{row['id']:>7}  {_iso(row['at']):<32}  {row['status']:<8} {row['severity']:<3} {row['rule']:<24} "
        f"{row['symbol'] or '-':<10} {row['fingerprint']:<16} {flags:<15} {row['summary']}"
    )


def attempt_line(row: dict[str, Any]) -> str:
    latency = "" if row["latency_s"] is None else f"{row['latency_s']:.3f}s"
    http = "-" if row["http_status"] is None else str(row["http_status"])
    return (
        f"{row['id']:>7}  {_iso(row['at']):<32}  {row['status']:<8} {row['rule']:<24} {row['symbol'] or '-':<10} "
        f"{row['channel']:<7} {row['receiver']:<28} #{row['attempt']:<2} {row['outcome']:<9} {http:<4} {latency:>9}"
        f"  {row['error'] or ''}"
    )


def json_line(row: dict[str, Any]) -> str:
    return json.dumps({k: _iso(v) if isinstance(v, datetime) else v for k, v in row.items()}, default=str)


async def _fetch(dsn: str, notifications: bool, **filters: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        if notifications:
            filters.pop("rule")
            page = await alert_history.notifications(conn, **filters)
        else:
            page = await alert_history.alert_changes(conn, **filters)
        return page.items
    finally:
        await conn.close()


@click.command()
@click.option("--symbol", default=None, help="Only this symbol's alerts.")
@click.option("--rule", default=None, help="Only this rule's alerts (not with --notifications).")
@click.option("--fingerprint", default=None, help="Only this alert.")
@click.option("--since", default=None, help="From then on: a duration ago (30m, 2h, 7d) or a time (UTC if no offset).")
@click.option("--limit", type=click.IntRange(1, alert_history.MAX_LIMIT), default=50, show_default=True,
              help="Most rows, newest first.")  # fmt: skip
@click.option("--notifications", is_flag=True, help="Notification attempts (webhook tries, Redis publishes) instead.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def history(symbol: str | None, rule: str | None, fingerprint: str | None, since: str | None, limit: int,
            notifications: bool, as_json: bool) -> None:  # fmt: skip
    """Alert state changes as the fleet archived them from guardian.alerts.v1, newest first. Audited."""
    if notifications and rule:
        raise click.BadParameter("attempts are found by --symbol or --fingerprint", param_hint="--rule")
    since_at = datetime.fromtimestamp(parse_time(since), UTC) if since else None
    settings = get_settings()
    params = {"symbol": symbol, "rule": rule, "fingerprint": fingerprint, "since": since, "limit": limit,
              "notifications": notifications}  # fmt: skip
    with audited(settings.postgres_dsn, "alerts history", params=params) as entry:
        rows = asyncio.run(
            _fetch(settings.postgres_dsn, notifications, symbol=symbol, rule=rule, fingerprint=fingerprint,
                   since=since_at, limit=limit)
        )  # fmt: skip
        entry.outcome["rows"] = len(rows)
    line = json_line if as_json else attempt_line if notifications else change_line
    for row in rows:
        click.echo(line(row))
    if not as_json:
        click.echo(f"{len(rows)} row(s)", err=True)
