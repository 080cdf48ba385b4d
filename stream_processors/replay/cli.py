"""`guardian replay` (re-drive a time range beside the fleet) and `guardian offsets reset` (move the fleet)."""

from __future__ import annotations

import asyncio
import os
import time

import click

from guardian.cli_kit import ProgressLine, iso, parse_duration, parse_time
from guardian.settings import get_settings
from guardian.sinks.audit import FAILED, audited

REPLAY_NICE = 10
# Beside a live fleet at 1k events/s on 2 cores, an unthrottled replay (~17k events/s) raised the fleet's
# emit -> Redis p99 from ~30 ms to 69-87 ms; at 5k events/s to 40-50 ms (docs/benchmarks.md).
DEFAULT_MAX_RATE = 5000.0


@click.command()
@click.option("--from", "from_", required=True, metavar="TIME", help="Start: ISO 8601 (UTC if no zone), or 2h (ago).")
@click.option("--to", "to", default=None, metavar="TIME", help="End (exclusive); default: the end of the topic now.")
@click.option("--symbol", "symbols", multiple=True, metavar="S", help="Only these symbols (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the offset plan and the event count; read nothing.")
@click.option("--max-rate", type=click.FloatRange(min=0), default=DEFAULT_MAX_RATE, show_default=True,
              help="Events per second at most, so the live fleet keeps its latency (0: as fast as the stores take "
                   "them).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress line.")
def replay(from_: str, to: str | None, symbols: tuple[str, ...], dry_run: bool, max_rate: float, quiet: bool) -> None:
    """Re-drive the events of a time range from Kafka through PostgreSQL and the hot view, beside the live
    fleet (its own reader, no group membership). Rows stored already stay as they are, hot view keys move
    only forward, and no alert is evaluated or notified again."""
    from guardian.stream_processors.replay.plan import plan_range
    from guardian.stream_processors.replay.redrive import redrive

    settings = get_settings()
    from_ms = int(parse_time(from_) * 1000)
    to_ms = int(parse_time(to) * 1000) if to else None
    params = {"from": iso(from_ms / 1000), "to": iso(to_ms / 1000) if to_ms else None, "symbols": list(symbols),
              "dry_run": dry_run, "max_rate": max_rate}  # fmt: skip
    with audited(settings.postgres_dsn, "replay" + (" --dry-run" if dry_run else ""), target=settings.events_topic,
                 params=params) as entry:  # fmt: skip
        plan = plan_range(settings, from_ms, to_ms)
        entry.outcome["planned"] = plan.events
        if dry_run:
            click.echo(f"{'partition':>9} {'start':>12} {'end':>12} {'events':>10}")
            for p in plan.partitions:
                click.echo(f"{p.partition:>9} {p.start:>12} {p.end:>12} {p.events:>10,}")
            scope = f" (of every symbol; --symbol {', '.join(symbols)} filters while reading)" if symbols else ""
            until = params["to"] or "now"
            click.echo(f"{plan.events:,} events in {plan.topic} from {params['from']} to {until}{scope}")
            return
        os.nice(REPLAY_NICE)  # the live fleet first: this process takes the CPU the fleet leaves over
        bar = ProgressLine(quiet)
        summary = asyncio.run(redrive(settings, plan.ranges(), symbols=symbols, max_rate=max_rate,
                                      progress=lambda done, total: bar("replay", done, total)))  # fmt: skip
        entry.outcome.update(summary.as_dict())
    click.echo(
        f"replayed {summary.read:,} events in {summary.seconds:.1f} s ({summary.rate:,.0f}/s): "
        f"{summary.inserted:,} rows inserted, {summary.present:,} already present, "
        f"{summary.hot_view_keys:,} hot view keys moved forward ({summary.window_added:,} events new to the 24 h "
        f"windows), {summary.dead_letters:,} dead letters (counted, not re-sent)"
        + (f"; {summary.matched:,} of the asked symbols" if symbols else "")
    )


@click.group()
def offsets() -> None:
    """The fleet's committed offsets on the events topic."""


@offsets.command("reset")
@click.option("--to-datetime", "to_datetime", metavar="TIME", help="The first offset at or after TIME.")
@click.option("--by-duration", "by_duration", metavar="D", help="The first offset of D ago (30m, 2h).")
@click.option("--to-earliest", is_flag=True, help="The oldest offset retention still holds.")
@click.option("--to-latest", is_flag=True, help="The end: skip everything not read yet.")
@click.option("--execute", is_flag=True, help="Act; without it the plan is only printed.")
def reset(to_datetime: str | None, by_duration: str | None, to_earliest: bool, to_latest: bool, execute: bool) -> None:
    """Move the fleet's group (GUARDIAN_WORKER_GROUP) so the fleet itself re-reads from a point: prints the
    plan, refuses while workers are running, acts only with --execute."""
    from guardian.stream_processors.replay.offsets import (
        EARLIEST,
        LATEST,
        admin_client,
        execute_reset,
        members,
        plan_reset,
    )

    modes = {"--to-datetime": to_datetime, "--by-duration": by_duration, "--to-earliest": to_earliest,
             "--to-latest": to_latest}  # fmt: skip
    chosen = [name for name, value in modes.items() if value]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-datetime, --by-duration, --to-earliest, --to-latest")
    settings = get_settings()
    to_ms = None
    if to_datetime:
        to_ms = int(parse_time(to_datetime) * 1000)
    elif by_duration:
        to_ms = int((time.time() - parse_duration(by_duration)) * 1000)
    position = EARLIEST if to_earliest else LATEST if to_latest else None
    params = {"mode": chosen[0], "value": to_datetime or by_duration, "execute": execute,
              "target_time": iso(to_ms / 1000) if to_ms else None}  # fmt: skip
    with audited(settings.postgres_dsn, "offsets reset" + ("" if execute else " (plan)"),
                 target=f"{settings.worker_group}/{settings.events_topic}", params=params) as entry:  # fmt: skip
        rows = plan_reset(settings, to_ms=to_ms, position=position)
        click.echo(f"group {settings.worker_group}, topic {settings.events_topic}")
        click.echo(f"{'partition':>9} {'current':>12} {'target':>12} {'to re-read':>12}")
        for row in rows:
            current = "-" if row.current is None else str(row.current)
            reread = "-" if row.reread is None else f"{row.reread:,}"
            click.echo(f"{row.partition:>9} {current:>12} {row.target:>12} {reread:>12}")
        total = sum(r.reread or 0 for r in rows)
        entry.outcome.update({"partitions": len(rows), "events_to_reread": total,
                              "plan": {r.partition: [r.current, r.target] for r in rows}})  # fmt: skip
        click.echo(f"{total:,} events to re-read in total" if total >= 0 else f"{-total:,} events skipped in total")
        if not execute:
            admin, _ = admin_client(settings)
            active = members(admin, settings.worker_group)
            note = f"; the group has {len(active)} active member(s): stop the workers first" if active else ""
            entry.status = FAILED if active else entry.status
            click.echo(f"plan only: add --execute to move the offsets{note}")
            return
        execute_reset(settings, rows)
        entry.outcome["executed"] = True
    click.echo(f"offsets of {settings.worker_group} moved; the fleet reads from them when it starts")
