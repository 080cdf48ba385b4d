"""The history store's upkeep in both modes: which mode, the policy from settings, maintenance, job health.

Two modes (docs/storage.md):
- `timescaledb`: a hypertable; TimescaleDB's policy jobs compress and drop chunks;
- `native-partitioning`: PostgreSQL range partitions that `guardian_maintain_native()`
  (sinks/migrations/0003_storage.sql) creates ahead, fills from the default partition and drops,
  run hourly by a worker and recorded in `guardian_storage_jobs` like a job.

`mode_rule()` decides the mode once, when the schema is created; the decision is recorded in
`guardian_meta` and everything after reads it. The policy (retention, chunk interval, compression
age) is not in the schema: `reconcile()` makes the database follow the settings, at `guardian stack
init` and at every worker start, and says what it changed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from guardian.errors import GuardianError
from guardian.sinks.alert_history import delete_older_than

if TYPE_CHECKING:
    from guardian.settings import Settings

TIMESCALEDB = "timescaledb"
NATIVE = "native-partitioning"
NATIVE_JOB = "native_maintenance"
HISTORY_JOB = "alert_history_retention"  # both modes: alert changes, notification attempts, silences
UPKEEP_LOCK = 0x67756172646D  # one reconcile + maintenance at a time across the fleet
UPKEEP_LOCK_TIMEOUT_S = 120
HYPERTABLE = "guardian_events"


class StorageJobError(GuardianError, RuntimeError):
    """A storage maintenance run failed; it is recorded in guardian_storage_jobs."""


# --- the mode -----------------------------------------------------------------------------------
MODE_FACTS_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS installed,"
    " current_setting('shared_preload_libraries') AS preload"
)


def mode_rule(installed: bool, preload: str) -> str:
    """TimescaleDB mode only when the extension is installed *and* preloaded: installed but not in
    shared_preload_libraries, CREATE EXTENSION fails, so native mode is the working choice."""
    # Entries may be paths ('$libdir/timescaledb') and quoted; the library's name is what counts.
    names = {name.strip("'\"").rsplit("/", 1)[-1] for name in re.split(r"[,\s]+", preload) if name}
    preloaded = "timescaledb" in names
    return TIMESCALEDB if installed and preloaded else NATIVE


async def mode_by_rule(conn: asyncpg.Connection) -> str:
    """What the rule says for this server now."""
    facts = await conn.fetchrow(MODE_FACTS_SQL)
    return mode_rule(facts["installed"], facts["preload"])


async def recorded_mode(conn: asyncpg.Connection) -> str | None:
    """The mode the schema was created in; None before the migrations."""
    if not await conn.fetchval("SELECT to_regclass('guardian_meta') IS NOT NULL"):
        return None
    return await conn.fetchval("SELECT value FROM guardian_meta WHERE key = 'storage_mode'")


# --- the policy ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoragePolicy:
    retention: timedelta
    chunk: timedelta
    compress_after: timedelta  # TimescaleDB only

    @classmethod
    def from_settings(cls, settings: Settings) -> StoragePolicy:
        return cls(
            retention=timedelta(days=settings.retention_days),
            chunk=timedelta(hours=settings.chunk_hours),
            compress_after=timedelta(hours=settings.compress_after_hours),
        )

    @property
    def ahead(self) -> timedelta:
        """How far ahead native partitions are made: a day, or two chunks if longer. Maintenance runs
        hourly, so an outage of the worker fleet this long still finds partitions."""
        return max(timedelta(days=1), 2 * self.chunk)


def _say(interval: timedelta | None) -> str:
    if interval is None:
        return "none"
    hours = interval.total_seconds() / 3600
    number, unit = (hours / 24, "day") if hours % 24 == 0 else (hours, "hour")
    return f"{number:g} {unit}{'' if number == 1 else 's'}"


async def reconcile(conn: asyncpg.Connection, policy: StoragePolicy, mode: str | None) -> list[str]:
    """Make the store's retention, chunk interval and compression follow `policy` in the recorded
    `mode`; the changes made."""
    if mode == TIMESCALEDB:
        return await _reconcile_timescaledb(conn, policy)
    if mode == NATIVE:
        return await _reconcile_native(conn, policy)
    raise StorageJobError(f"the schema is not applied (storage mode: {mode}); run guardian stack init")


async def _meta(conn: asyncpg.Connection, key: str) -> str | None:
    return await conn.fetchval("SELECT value FROM guardian_meta WHERE key = $1", key)


async def _reconcile_native(conn: asyncpg.Connection, policy: StoragePolicy) -> list[str]:
    changes = []
    for key, value in (("retention", policy.retention), ("chunk_interval", policy.chunk)):
        before = await _meta(conn, key)
        if before != str(value):
            await conn.execute(
                "INSERT INTO guardian_meta VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                key,
                str(value),
            )
            was = _say(_parse_timedelta(before)) if before else "unset"
            changes.append(f"{key.replace('_', ' ')}: {was} -> {_say(value)}")
    return changes


def _parse_timedelta(text: str) -> timedelta | None:
    """str(timedelta) back: '7 days, 0:00:00', '1:00:00', '1 day, 2:00:00'."""
    match = re.fullmatch(r"(?:(\d+) days?, )?(\d+):(\d+):(\d+)", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


async def _policy_job(conn: asyncpg.Connection, proc: str, key: str) -> timedelta | None:
    row = await conn.fetchrow(
        f"SELECT (config->>'{key}')::interval AS age FROM timescaledb_information.jobs"
        " WHERE proc_name = $1 AND hypertable_name = $2",
        proc,
        HYPERTABLE,
    )
    return row["age"] if row else None


async def _reconcile_timescaledb(conn: asyncpg.Connection, policy: StoragePolicy) -> list[str]:
    changes = []
    chunk = await conn.fetchval(
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_name = $1 AND column_name = 'event_time'",
        HYPERTABLE,
    )
    if chunk != policy.chunk:
        await conn.execute("SELECT set_chunk_time_interval($1, $2::interval)", HYPERTABLE, policy.chunk)
        changes.append(f"chunk interval: {_say(chunk)} -> {_say(policy.chunk)} (new chunks)")
    for proc, key, label, wanted, remove, add in (
        ("policy_compression", "compress_after", "compression after", policy.compress_after,
         "remove_compression_policy", "add_compression_policy"),
        ("policy_retention", "drop_after", "retention", policy.retention, "remove_retention_policy",
         "add_retention_policy"),
    ):  # fmt: skip
        current = await _policy_job(conn, proc, key)
        if current == wanted:
            continue
        async with conn.transaction():
            if current is not None:
                await conn.execute(f"SELECT {remove}($1)", HYPERTABLE)
            await conn.execute(f"SELECT {add}($1, $2::interval)", HYPERTABLE, wanted)
        changes.append(f"{label}: {_say(current)} -> {_say(wanted)}")
    return changes


# --- maintenance --------------------------------------------------------------------------------
async def _run_job(conn: asyncpg.Connection, job: str, work: Callable[[], Awaitable[list[str]]]) -> list[str]:
    """Run `work` as a run of `job` in guardian_storage_jobs: start, then success or failure (with its error)."""
    await conn.execute(
        "INSERT INTO guardian_storage_jobs (job, last_start, runs) VALUES ($1, now(), 1) ON CONFLICT (job)"
        " DO UPDATE SET last_start = now(), runs = guardian_storage_jobs.runs + 1",
        job,
    )
    try:
        lines = await work()
    except asyncpg.PostgresError as error:
        message = f"{type(error).__name__}: {error}"
        await conn.execute(
            "UPDATE guardian_storage_jobs SET last_failure = now(), last_error = $2, failures = failures + 1"
            " WHERE job = $1",
            job,
            message,
        )
        raise StorageJobError(f"{job} failed: {message}") from error
    await conn.execute("UPDATE guardian_storage_jobs SET last_success = now() WHERE job = $1", job)
    return lines


async def maintain(conn: asyncpg.Connection, policy: StoragePolicy, mode: str | None) -> list[str]:
    """One maintenance run, recorded as a job run: native mode's partitions and pruning (TimescaleDB's
    own jobs do that in its mode: nothing to run). Call it holding the upkeep lock (upkeep() does)."""
    if mode != NATIVE:
        return []

    async def work() -> list[str]:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT * FROM guardian_maintain_native($1, $2, $3)", policy.retention, policy.chunk, policy.ahead
            )
        return [f"{r['action']} {r['detail']}" for r in rows]

    return await _run_job(conn, NATIVE_JOB, work)


async def prune_history(conn: asyncpg.Connection, policy: StoragePolicy) -> list[str]:
    """Delete alert and notification history, and silences, older than the retention (both modes; as the
    owner: the application role may not delete), recorded as the job HISTORY_JOB."""

    async def work() -> list[str]:
        deleted = await delete_older_than(conn, datetime.now(UTC) - policy.retention)
        return [f"deleted {n} row(s) from {table} (retention)" for table, n in deleted.items() if n]

    return await _run_job(conn, HISTORY_JOB, work)


async def upkeep(dsn: str, policy: StoragePolicy) -> list[str]:
    """reconcile() then maintain(), one process of the fleet at a time (the others wait: it takes
    milliseconds to seconds): what `guardian stack init`, a worker start and the worker's hourly timer
    run. The changes and actions, as lines for a log."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f"SET lock_timeout = '{UPKEEP_LOCK_TIMEOUT_S}s'")
        await conn.execute("SELECT pg_advisory_lock($1)", UPKEEP_LOCK)
        try:
            mode = await recorded_mode(conn)
            changes = await reconcile(conn, policy, mode)
            actions, failures = [], []
            for job in (lambda: maintain(conn, policy, mode), lambda: prune_history(conn, policy)):
                try:  # one failing job does not keep the other from running; the first failure is raised
                    actions += await job()
                except StorageJobError as error:
                    failures.append(error)
            if failures:
                raise failures[0]
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", UPKEEP_LOCK)
    finally:
        await conn.close()
    return [*changes, *_collapse_created(actions)]


def _collapse_created(actions: list[str]) -> list[str]:
    """'created p1', 'created p2', ... -> 'created 63 partitions: p1 .. p63' (a first run makes many)."""
    created = [a.removeprefix("created ") for a in actions if a.startswith("created ")]
    if len(created) <= 3:
        return actions
    rest = [a for a in actions if not a.startswith("created ")]
    return [*rest, f"created {len(created)} partitions: {created[0]} .. {created[-1]}"]


# --- job health ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobHealth:
    name: str
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str | None

    @property
    def failing(self) -> bool:
        """Its last run failed: a failure after the last success (or with none)."""
        if self.last_failure is None:
            return False
        return self.last_success is None or self.last_failure > self.last_success

    def describe(self, now: datetime) -> str:
        def ago(at: datetime | None) -> str:
            return "never" if at is None else f"{_say_age(now - at)} ago"

        text = f"{self.name}: last success {ago(self.last_success)}"
        if self.failing:
            text += f", FAILING since {ago(self.last_failure)}: {self.last_error or 'no message'}"
        elif self.last_failure is not None:
            text += f", last failure {ago(self.last_failure)}"
        return text


def _say_age(age: timedelta) -> str:
    seconds = max(age.total_seconds(), 0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def job_health(conn: asyncpg.Connection, mode: str | None = None) -> list[JobHealth]:
    """The storage jobs of the recorded mode (read here unless given) with their last success and failure."""
    mode = mode or await recorded_mode(conn)
    if mode == NATIVE:
        rows = await conn.fetch(
            "SELECT job, last_success, last_failure, last_error FROM guardian_storage_jobs ORDER BY job"
        )
        return [JobHealth(r["job"], r["last_success"], r["last_failure"], r["last_error"]) for r in rows]
    if mode != TIMESCALEDB:
        return []
    ours = [  # the jobs this project runs in both modes (HISTORY_JOB)
        JobHealth(r["job"], r["last_success"], r["last_failure"], r["last_error"])
        for r in await conn.fetch(
            "SELECT job, last_success, last_failure, last_error FROM guardian_storage_jobs WHERE job <> $1"
            " ORDER BY job",
            NATIVE_JOB,
        )
    ]
    # A job that never succeeded has last_successful_finish '-infinity', which asyncpg decodes as a naive
    # datetime.min (found against TimescaleDB 2.28.3 on PostgreSQL 15.20, where every job fails).
    rows = await conn.fetch(
        "SELECT j.job_id, j.proc_name, NULLIF(s.last_successful_finish, '-infinity') AS last_successful_finish,"
        " s.last_run_status, NULLIF(s.last_run_started_at, '-infinity') AS last_run_started_at"
        " FROM timescaledb_information.jobs j LEFT JOIN timescaledb_information.job_stats s USING (job_id)"
        " WHERE j.hypertable_name = $1 ORDER BY j.job_id",
        HYPERTABLE,
    )
    errors: dict[int, tuple[datetime, str]] = {}
    try:  # TimescaleDB >= 2.9 keeps the failures' messages
        for e in await conn.fetch(
            # Rows without a finish time (a crash detected at start) would sort first and hide the last failure.
            "SELECT DISTINCT ON (job_id) job_id, finish_time, err_message FROM timescaledb_information.job_errors"
            " WHERE finish_time IS NOT NULL ORDER BY job_id, finish_time DESC"
        ):
            errors[e["job_id"]] = (e["finish_time"], e["err_message"])
    except asyncpg.UndefinedTableError:
        pass
    health = []
    for r in rows:
        failed_at, message = errors.get(r["job_id"], (None, None))
        if r["last_run_status"] == "Failed" and failed_at is None:
            failed_at = r["last_run_started_at"]
        name = f"{r['proc_name']} (job {r['job_id']})"
        health.append(JobHealth(name, r["last_successful_finish"], failed_at, message))
    return [*health, *ours]
