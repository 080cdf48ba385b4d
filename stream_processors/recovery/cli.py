"""`guardian recover`: rebuild the Redis hot view, list the checkpoints."""

from __future__ import annotations

import asyncio
import time

import click

from guardian.cli_kit import ProgressLine
from guardian.schemas.checkpoint import FLEET, HOST, CheckpointStore, CorruptCheckpointError, unpack
from guardian.settings import get_settings
from guardian.sinks import audit


@click.group()
def recover() -> None:
    """Recovery: rebuild a lost hot view, inspect the checkpoints."""


@recover.command("hot-view")
@click.option("--reason", default="asked by an operator", help="Why: recorded in the audit trail and the logs.")
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option("--actor", default=None, hidden=True, help="Who asked, for the audit (a worker names itself).")
def hot_view(reason: str, quiet: bool, actor: str | None) -> None:
    """Rebuild the Redis hot view: newest valid fleet checkpoint, then the events after it, then the
    24 h window. Safe while workers run; readers see `rebuilding` in `guardian:hotview` meanwhile."""
    from guardian.stream_processors.recovery.rebuild import rebuild_hot_view

    report = asyncio.run(rebuild_hot_view(get_settings(), reason=reason, actor=actor, progress=ProgressLine(quiet)))
    source = report.source if report.checkpoint_id is None else f"checkpoint {report.checkpoint_id}"
    age = f" ({report.checkpoint_age_s:g} s old)" if report.checkpoint_age_s is not None else ""
    click.echo(
        f"hot view rebuilt from {source}{age}: {report.merged_fields:,} keys merged, {report.tail_events:,} tail "
        f"events (current after {report.current_after_s} s), {report.window_events:,} events of the 24 h window, "
        f"{report.skipped_events:,} skipped; {report.seconds} s"
    )
    for problem in report.problems:
        click.echo(f"skipped a corrupt checkpoint: {problem}", err=True)


@recover.command("checkpoints")
@click.option(
    "--forget",
    "forget",
    metavar="OWNER",
    default=None,
    help="Tombstone every checkpoint of OWNER (`FLEET/<group>` or `HOST/<producer id>`): one that is gone.",
)
def checkpoints(forget: str | None) -> None:
    """List the checkpoints on the checkpoint topic: owner, id, age, size, offsets, valid or why not."""
    settings = get_settings()
    store = CheckpointStore(settings)
    if forget is not None:
        kind, _, owner = forget.partition("/")
        if kind not in (FLEET, HOST) or not owner:
            raise click.BadParameter("FLEET/<group> or HOST/<producer id>", param_hint="--forget")
        with audit.audited(settings.postgres_dsn, "recover checkpoints --forget", target=forget,
                           params={"owner": forget}) as entry:  # fmt: skip
            keys = store.forget(kind, owner)
            entry.outcome["keys"] = [k.decode() for k in keys]
        click.echo(f"forgot {len(keys)} checkpoint(s) of {forget}" if keys else f"no checkpoints of {forget}")
        return
    rows = {}
    for key, value in store.records():
        if value:
            rows[key] = value  # compaction keeps the last record per key
        else:
            rows.pop(key, None)  # a tombstone
    if not rows:
        click.echo(f"no checkpoints on {settings.checkpoints_topic}")
    now = time.time()
    for key, value in sorted(rows.items()):
        try:
            checkpoint = unpack(value)
        except CorruptCheckpointError as exc:
            click.echo(f"{key.decode(errors='replace'):<48} CORRUPT: {exc}")
            continue
        events = sum(checkpoint.offsets.values())
        click.echo(
            f"{key.decode():<48} id {checkpoint.id}  {now - checkpoint.created_at_us / 1e6:8.1f} s old  "
            f"{len(value):>10,} B  offsets sum {events:,}"
        )
