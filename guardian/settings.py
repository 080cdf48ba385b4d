"""The one settings object. Every knob is an environment variable with the GUARDIAN_ prefix.

Defaults point at the local stack that `guardian stack up` starts on non-default
loopback ports, so nothing here collides with services already on the host.
Secrets (the API token, the database password outside the local stack) have no
defaults that would work in production: see `require_secret`.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from guardian.cpus import parse_cpu_list
from guardian.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout: only the local stack's files live here
# The local stack's PostgreSQL roles: its bootstrap superuser owns the schema; the application logs in as a
# member of guardian_writer (sinks/migrations/0004_audit_chain.sql).
OWNER_ROLE = "guardian"
APP_ROLE = "guardian_app"
# Where a process keeps its own state by default (XDG Base Directory): a pip-installed producer must not
# write under site-packages.
STATE_DIR = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "guardian"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUARDIAN_", extra="ignore")

    # --- Kafka -----------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers (host:port,...).")
    events_topic: str = Field("guardian.events.v1", description="Topic of guardrail events, keyed by symbol.")
    alerts_topic: str = Field("guardian.alerts.v1", description="Topic of alert state changes (Avro).")
    dlq_topic: str = Field("guardian.dlq.v1", description="Dead-letter topic: raw bytes + headers naming why.")
    events_partitions: int = Field(12, ge=1, description="Partitions of the events topic (used when creating it).")
    events_retention_hours: int = Field(
        168, ge=24, description="Retention of the events topic = the replay window (at least 24 h)."
    )
    max_event_age_hours: float = Field(
        720,
        gt=0,
        description=(
            "Oldest `event_time` a storable event may carry, in hours before now: `emit()` refuses older ones, the "
            "worker dead-letters them. At least the events topic's retention, so a whole-topic replay passes."
        ),
    )
    max_future_skew_s: float = Field(
        300,
        ge=0,
        description=(
            "How far ahead of the checking clock an `event_time` may be, in seconds: `emit()` refuses later ones, the"
            " worker dead-letters them."
        ),
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent schema registry URL; unset = Avro single-object encoding."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description=(
            "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`: how every Kafka client of the product connects "
            "(producer, worker, Faust's tables, CLI tools)."
        ),
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with a `SASL_*` protocol."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user; required with a `SASL_*` protocol.")
    kafka_sasl_password: str | None = Field(
        None, description="SASL password; required with a `SASL_*` protocol. A secret: no default."
    )
    kafka_ssl_ca_location: Path | None = Field(
        None, description="CA certificate file for SSL/SASL_SSL; unset = the system's trust store."
    )

    # --- Redis / PostgreSQL ----------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:16379/0", description="Redis for the hot view and alerts.")
    postgres_dsn: str = Field(
        "postgresql://guardian_app@127.0.0.1:15432/guardian",
        description=(
            "PostgreSQL/TimescaleDB DSN of the application role (sinks, API, restore, audit): a member of "
            "`guardian_writer`, which may read and append but not change or delete. The local stack trusts "
            "loopback; anywhere else put a password in it."
        ),
    )
    postgres_admin_dsn: str = Field(
        "postgresql://guardian@127.0.0.1:15432/guardian",
        description=(
            "DSN of the role that owns the schema, used only for migrations and storage upkeep (`guardian stack "
            "init`, a worker's start and hourly upkeep). Unset while `GUARDIAN_POSTGRES_DSN` is set = that DSN: one "
            "role does both, and the audit trail is then not append-only for the application "
            "([operations](operations.md#audit-trail))."
        ),
    )
    retention_days: int = Field(
        7,
        ge=1,
        description=(
            "Days of events kept in the database; whole chunks are dropped, so a row stays up to one chunk longer "
            "([storage](storage.md)). Changed later, `guardian stack init` or the next worker start applies it."
        ),
    )
    chunk_hours: int = Field(
        1,
        ge=1,
        le=24 * 7,
        description=(
            "Width of the database's time chunks in hours: TimescaleDB's chunk interval (for new chunks), native "
            "mode's partitions."
        ),
    )
    compress_after_hours: int = Field(
        24, ge=1, description="TimescaleDB mode: chunks older than this many hours are compressed."
    )
    hot_view_recent_max: int = Field(
        10_000, ge=1, description="Most events kept per symbol in the Redis 24 h window (newest kept)."
    )
    live_stream_maxlen: int = Field(
        10_000,
        ge=1,
        description=(
            "About how many entries the live feed `guardian:live` keeps (breaker and alert state changes, for the "
            "dashboard): `XADD MAXLEN ~`, so Redis may keep up to one stream node (100 entries) more."
        ),
    )

    # --- Producer --------------------------------------------------------------
    producer_id: str | None = Field(
        None,
        description=(
            "Producer identity, naming its spool; unset = `<host>-<program>` (`-2`, `-3`, ... while lower ones run), "
            "stable across restarts."
        ),
    )
    producer_linger_ms: int = Field(
        10, ge=0, description="librdkafka linger.ms of the producer: batching delay before a send."
    )
    producer_report_interval_ms: float = Field(
        25,
        ge=0,
        description=(
            "How often `emit()` serves Kafka's delivery reports, in ms: fewer, larger batches keep `emit()`'s "
            "p99/p99.9 low; each batch is one slower call."
        ),
    )
    producer_fsync_interval_ms: int = Field(
        1000,
        ge=1,
        description=(
            "How often the disk spool is fsynced while it is written, in ms: the events a power loss can take (`kill "
            "-9` takes none)."
        ),
    )
    producer_io_cpus: str | None = Field(
        None,
        description=(
            "CPUs for the producer's network threads, e.g. `1` or `2-3`: keep them off the trading thread's core. "
            "Unset = wherever the OS puts them."
        ),
    )
    spool_dir: Path = Field(
        STATE_DIR / "spool",
        description=(
            "Disk spool for events Kafka can't take, one directory per producer (`~/.local/state/guardian/spool` when"
            " `XDG_STATE_HOME` is unset)."
        ),
    )

    # --- Worker ----------------------------------------------------------------
    worker_web_bind: str = Field(
        "127.0.0.1", description="Address a worker's web server listens on; `0.0.0.0` to be scraped from elsewhere."
    )
    worker_web_port: int = Field(16066, description="Port of a worker's web server (`/metrics`, `/healthz`).")
    worker_group: str = Field(
        "guardian-worker",
        description=(
            "Consumer group of the fleet on the events topic (`guardian offsets reset` moves its offsets); Faust's "
            "own group, for the alert table, is `<group>-state`."
        ),
    )
    worker_stall_s: float = Field(
        60,
        gt=0,
        description=(
            "No offset committed for this long while events wait: `/healthz` answers 503 `stalled` with the reason."
        ),
    )
    worker_session_timeout_ms: int = Field(
        6000,
        ge=1000,
        description=(
            "Consumer session of a worker on the events topic: a killed worker's partitions move to the others "
            "this long after it died. Kafka refuses values below the broker's `group.min.session.timeout.ms` (6000 "
            "by default; the local stack sets 1000): 2000 brings a kill's recovery under 5 s (docs/recovery.md)."
        ),
    )
    worker_heartbeat_interval_ms: int = Field(
        2000, ge=100, description="How often a worker tells the group it is alive; at most a third of the session."
    )
    worker_data_dir: Path = Field(STATE_DIR / "worker", description="Faust's state directory.")
    worker_stats_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often a worker writes its stats snapshot `guardian:worker:{host}:{pid}` to Redis.",
    )
    worker_stats_ttl_s: float = Field(
        10.0,
        gt=0,
        description=(
            "How long a worker's stats snapshot outlives its last write: a worker that died drops out of the "
            "dashboard's sums after this. Above GUARDIAN_WORKER_STATS_INTERVAL_S."
        ),
    )
    alert_rules_file: Path | None = Field(
        None,
        description=(
            "Alert rules (YAML), validated at worker start. Unset = `guardian/stream_processors/alerts/default-"
            "rules.yaml`, shipped in the package; copy it to start your own."
        ),
    )

    # --- Recovery (L3) ----------------------------------------------------------
    checkpoints_topic: str = Field(
        "guardian.checkpoints.v1",
        description="Compacted topic of checkpoints: the fleet's derived state and each trading host's snapshot.",
    )
    checkpoint_interval_s: float = Field(
        30,
        gt=0,
        description=(
            "How often the fleet checkpoints the hot view's state, the alert state and the silences (and at a "
            "clean shutdown); a rebuilt Redis replays at most this much of the events topic beyond it."
        ),
    )
    checkpoints_kept: int = Field(
        3, ge=2, description="Checkpoints kept per owner (fleet or host): a corrupt newest one falls back to older."
    )
    restore_timeout_s: float = Field(
        3.0, gt=0, description="Default deadline of a trading host's `restore()`: it returns what it has by then."
    )

    # --- Consistency ------------------------------------------------------------
    verify_interval_s: float = Field(
        300,
        ge=0,
        description=(
            "How often one worker (the owner of partition 0) verifies that Kafka, PostgreSQL and the hot view "
            "agree, in a child process at low CPU priority; a mismatch fires a P1 alert. 0: never."
        ),
    )
    verify_window_s: float = Field(
        600,
        gt=0,
        description="What each periodic verification covers: the events Kafka received this long ago and since.",
    )

    # --- API -------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the query API listens on.")
    api_port: int = Field(18080, description="Port of the query API.")
    api_token: str | None = Field(
        None,
        description=(
            "Break-glass admin token for the API (audited as `token:env`). A secret, no default; optional once "
            "an admin token exists (`guardian api token create --role admin`), and best unset then."
        ),
    )

    api_cookie_secure: bool = Field(
        False,
        description=(
            "Mark the dashboard's session cookie Secure (sent over HTTPS only): set it when the API is served "
            "behind TLS."
        ),
    )

    audit_actor: str | None = Field(
        None,
        description=(
            "Who the audit trail names for this process's operations; default `user@host`. The API sets it on "
            "the commands it runs for a token (`token:NAME via user@host`)."
        ),
    )

    # --- Local stack -----------------------------------------------------------
    stack_dir: Path = Field(
        REPO_ROOT / ".stack", description="Data, logs, pids and the Kafka jar cache of the local stack."
    )
    redis_port: int = Field(16379, description="Port of the local Redis.")
    postgres_port: int = Field(15432, description="Port of the local PostgreSQL.")
    kafka_port: int = Field(19092, description="Client port of the local Kafka broker.")
    kafka_controller_port: int = Field(19093, description="KRaft controller port of the local Kafka.")
    kafka_heap: str = Field("768m", description="JVM heap of the local Kafka broker.")
    kafka_jvm_options: str = Field(
        "",
        description="More JVM options for the local Kafka broker, space-separated; they override the stack's own.",
    )

    log_level: str = Field("INFO", description="Log level of every guardian process.")
    log_format: str = Field("console", description="`json` for machine-readable logs, `console` for people.")

    @field_validator("producer_io_cpus")
    @classmethod
    def _cpu_list(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cpu_list(value)
        return value

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"GUARDIAN_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs GUARDIAN_KAFKA_SASL_USERNAME"
                " and GUARDIAN_KAFKA_SASL_PASSWORD"
            )
        return self

    @model_validator(mode="after")
    def _stats_outlive_their_interval(self) -> Settings:
        if self.worker_stats_ttl_s <= self.worker_stats_interval_s:
            raise ValueError(
                f"GUARDIAN_WORKER_STATS_TTL_S ({self.worker_stats_ttl_s}) is not above GUARDIAN_WORKER_STATS_INTERVAL_S"
                f" ({self.worker_stats_interval_s}): a live worker's snapshot would expire between two writes"
            )
        return self

    @model_validator(mode="after")
    def _heartbeats_fit_the_session(self) -> Settings:
        if self.worker_heartbeat_interval_ms * 3 > self.worker_session_timeout_ms:
            raise ValueError(
                f"GUARDIAN_WORKER_HEARTBEAT_INTERVAL_MS ({self.worker_heartbeat_interval_ms}) is above a third of "
                f"GUARDIAN_WORKER_SESSION_TIMEOUT_MS ({self.worker_session_timeout_ms}): one late heartbeat would "
                "evict a live worker"
            )
        return self

    @model_validator(mode="after")
    def _verifications_cover_every_event(self) -> Settings:
        if self.verify_interval_s and self.verify_window_s < self.verify_interval_s:
            raise ValueError(
                f"GUARDIAN_VERIFY_WINDOW_S ({self.verify_window_s:g}) is below GUARDIAN_VERIFY_INTERVAL_S"
                f" ({self.verify_interval_s:g}): events between two verifications would never be verified"
            )
        return self

    @model_validator(mode="after")
    def _replay_window_is_storable(self) -> Settings:
        if self.max_event_age_hours < self.events_retention_hours:
            raise ValueError(
                f"GUARDIAN_MAX_EVENT_AGE_HOURS ({self.max_event_age_hours:g}) is below GUARDIAN_EVENTS_RETENTION_HOURS"
                f" ({self.events_retention_hours}): a replay of the whole topic would dead-letter its oldest events"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _addresses_follow_local_ports(cls, data: Any) -> Any:
        """Moving a local service to another port moves the address clients use, unless that is set too."""
        if isinstance(data, dict):
            kafka = data.get("kafka_port", 19092)
            data.setdefault("kafka_bootstrap", f"127.0.0.1:{kafka}")
            data.setdefault("redis_url", f"redis://127.0.0.1:{data.get('redis_port', 16379)}/0")
            postgres = data.get("postgres_port", 15432)
            if "postgres_dsn" in data:  # one DSN given: one role does both
                data.setdefault("postgres_admin_dsn", data["postgres_dsn"])
            data.setdefault("postgres_dsn", f"postgresql://{APP_ROLE}@127.0.0.1:{postgres}/guardian")
            data.setdefault("postgres_admin_dsn", f"postgresql://{OWNER_ROLE}@127.0.0.1:{postgres}/guardian")
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


SECRETS = {"api_token", "kafka_sasl_password"}


def masked(name: str, value: object) -> str:
    """A setting's value as it may be printed: secrets, and a password inside a URL, as ****."""
    if value is None or value == "":
        return ""
    if name in SECRETS:
        return "****"
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1****@", str(value))


def describe_config_error(error: ValidationError) -> str:
    """A ValidationError in the variable names people actually set, secrets masked."""
    lines = []
    for problem in error.errors():
        if not problem["loc"]:
            # A rule across settings: its message names the variables, and its input is every setting,
            # secrets included, so it is never printed.
            lines.append(f"  {problem['msg'].removeprefix('Value error, ')}")
            continue
        field = str(problem["loc"][0])
        lines.append(f"  GUARDIAN_{field.upper()}={masked(field, problem.get('input'))!r}: {problem['msg']}")
    return "bad configuration:\n" + "\n".join(lines)


def require_secret(value: str | None, variable: str) -> str:
    """Fail loudly when a secret is missing instead of running with a guessable default."""
    if not value:
        raise ConfigError(f"{variable} is not set. It has no default on purpose: set it to a long random value.")
    return value
