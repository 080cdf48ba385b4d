"""`guardian verify`: do Kafka, PostgreSQL and the Redis hot view agree? `--repair` mends what does not."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click
import orjson

from guardian.cli_kit import ProgressLine, iso, parse_duration
from guardian.settings import get_settings
from guardian.sinks.audit import FAILED, audited

if TYPE_CHECKING:
    from guardian.settings import Settings
    from guardian.stream_processors.consistency.verify import VerifyReport

if TYPE_CHECKING:
    pass


@click.command()
@click.option("--since", default="1h", show_default=True, metavar="DURATION",
              help="Verify the events Kafka received this long ago and since (30m, 2h, 1d).")  # fmt: skip
@click.option("--repair", is_flag=True, help="Re-drive missing rows from Kafka, rewrite stale keys, verify again.")
@click.option("--settle", "settle", default="10s", show_default=True, metavar="DURATION",
              help="How long to wait for the fleet to commit, and before a second look at what is found.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
@click.option("--ledger", "show_ledger", is_flag=True, help="Every minute of the sequence ledger, not only the bad.")
@click.option("--actor", default=None, hidden=True, help="Who asked, for the audit (a worker names itself).")
def verify(since: str, repair: bool, settle: str, as_json: bool, show_ledger: bool, actor: str | None) -> None:
    """Compare, per partition and per producer, what Kafka holds with PostgreSQL's rows and the dead letters
    (every offset a row or a dead letter; per-producer sequences without gaps or duplicates), and each hot
    view `latest`/`breaker` key with the newest row. Exits 1 on any mismatch, naming offsets and keys."""
    from guardian.stream_processors.consistency.verify import verify as run

    settings = get_settings()
    since_s, settle_s = parse_duration(since), parse_duration(settle)
    params = {"since": since, "repair": repair, "settle": settle}
    with audited(settings.postgres_dsn, "verify --repair" if repair else "verify", target=settings.events_topic,
                 params=params, actor=actor) as entry:  # fmt: skip
        report = asyncio.run(run(settings, since_s, settle_s))
        entry.outcome["first"] = _brief(report)
        if not as_json or repair:
            _print(report, show_ledger, err=as_json)
        if repair and not report.ok:
            repaired = asyncio.run(_repair(settings, report))
            entry.outcome["repair"] = repaired
            click.echo(f"repair: {repaired['rows_inserted']:,} rows stored again (of {repaired['rows_redriven']:,} "
                       f"re-driven), {repaired['keys_rewritten']} keys rewritten ({repaired['keys_moved_on']} had "
                       f"moved on); verifying again", err=as_json)  # fmt: skip
            report = asyncio.run(run(settings, since_s, settle_s))
            entry.outcome["after_repair"] = _brief(report)
            if not as_json:
                _print(report, show_ledger)
        entry.status = 0 if report.ok else FAILED
    if as_json:
        sys.stdout.write(orjson.dumps(report.as_dict(), default=str, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    if not report.ok:
        sys.exit(1)


def _brief(report: VerifyReport) -> dict:
    """The report as the audit keeps it: without the long lists."""
    return {k: v for k, v in report.as_dict().items() if k not in ("keys", "producers", "lost_sequences")}


async def _repair(settings: Settings, report: VerifyReport) -> dict:
    import redis.asyncio as redis

    from guardian.stream_processors.consistency.repair import RepairReport, redrive_missing, rewrite_keys
    from guardian.stream_processors.consistency.verify import keys_now

    done = RepairReport()
    bar = ProgressLine()
    await redrive_missing(settings, report.missing, done, lambda n, total: bar("re-drive", n, total))
    keys = report.keys
    if keys and done.rows_inserted:  # a stale key's newest row may be one that just came back
        keys = await keys_now(settings, report.window)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        await rewrite_keys(client, keys, done)
    finally:
        await client.aclose()
    return done.__dict__


def _print(report: VerifyReport, show_ledger: bool, err: bool = False) -> None:
    def echo(line: str = "") -> None:
        click.echo(line, err=err)

    window = report.window
    echo(f"verified events Kafka received from {iso(window.start_s)} to the fleet's commits at {iso(window.taken_s)}"
         f": {window.events:,} offsets, {report.keys_checked:,} hot view keys, {report.seconds:.1f} s")  # fmt: skip
    missing_by_partition: dict[int, int] = {}
    for record in report.missing:
        missing_by_partition[record.partition] = missing_by_partition.get(record.partition, 0) + 1
    echo(f"{'partition':>9} {'offsets':>25} {'events':>10} {'missing':>8} {'unread':>8}")
    for p in sorted(set(window.ranges) | set(window.unread)):
        start, end = window.ranges.get(p, (0, 0))
        span = f"{start}-{end}" if end > start else "-"
        echo(f"{p:>9} {span:>25} {end - start:>10,} {missing_by_partition.get(p, 0):>8} {window.unread.get(p, 0):>8}")
    if window.never_committed:
        echo(f"not verified: partitions {window.never_committed} hold events the fleet never committed")
    echo(f"dead-lettered: {report.dead_lettered:,}; stored from another offset or time: {report.stored_elsewhere:,}")
    totals = report.ledger.totals()
    if totals:
        echo(f"{'producer':<32} {'rows':>10} {'lost':>6} {'dups':>6} {'missing':>8} {'dead':>6}")
        for producer, t in sorted(totals.items()):
            echo(f"{producer:<32} {t['rows']:>10,} {t['lost']:>6} {t['duplicates']:>6} {t['missing_rows']:>8} "
                 f"{t['dead_lettered']:>6}")  # fmt: skip
    for line in report.ledger.minutes:
        if show_ledger or line.lost or line.duplicates or line.missing_rows:
            echo(
                f"  {line.producer_id} {line.minute:%Y-%m-%d %H:%M}  rows {line.rows:,}  lost {line.lost}  "
                f"duplicates {line.duplicates}  missing rows {line.missing_rows}  dead-lettered {line.dead_lettered}"
            )
    for producer, spans in report.ledger.lost_spans.items():
        shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:10])
        echo(f"lost before Kafka: {producer} sequences {shown}{' ...' if len(spans) > 10 else ''}")
    for record in report.missing[:20]:
        what = f"{record.producer_id} seq {record.sequence}" if record.readable else "undecodable"
        echo(f"missing row: partition {record.partition} offset {record.offset} ({what})")
    if len(report.missing) > 20:
        echo(f"... and {len(report.missing) - 20:,} more missing rows")
    for finding in report.keys[:20]:
        echo(f"{finding.kind.replace('_', ' ')}: {finding.describe()}")
    bad = {k: v for k, v in report.mismatches().items() if v}
    echo("OK: Kafka, PostgreSQL and the hot view agree" if not bad else
         "MISMATCH: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in bad.items()))  # fmt: skip
