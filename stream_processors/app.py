"""The Faust app of the worker fleet: `guardian worker` or `faust -A guardian.stream_processors.app worker`.

Faust runs the worker: its web server (/metrics, /healthz), timers, the alert state
table and the process lifecycle. The event hot path is `IngestService`, which reads
`guardian.events.v1` in batches with confluent-kafka instead of a Faust stream (see
stream_processors/batch_source.py for the measured reason) and runs the
`IngestLoop` (stream_processors/ingest.py): decode, DLQ, sinks, alerts, commit.

How offsets get committed: auto-commit is off; a batch's offsets are committed only
after both sinks wrote it, its alerts were published and its dead letters were
acknowledged by Kafka. A crash before that re-delivers the batch — harmless, because
every sink is idempotent. Workers sharing GUARDIAN_WORKER_GROUP form one consumer
group (cooperative-sticky assignment); partitions rebalance as they come and go.
"""

from __future__ import annotations

import asyncio
import gc
import time

import asyncpg
import faust
import mode
import redis.asyncio as redis
from confluent_kafka import Consumer
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guardian.kafka_config import client_config, faust_broker
from guardian.kafka_lookup import probe, watermarks
from guardian.logs import get_logger
from guardian.schemas.codec import EventCodec
from guardian.schemas.validation import EventRules
from guardian.settings import get_settings
from guardian.sinks import storage
from guardian.sinks.postgres import PostgresSink
from guardian.sinks.redis_hot_view import RedisHotView
from guardian.sinks.storage import StoragePolicy
from guardian.stream_processors import metrics, storage_watch
from guardian.stream_processors.alerts import state_copy
from guardian.stream_processors.alerts.archive import AlertArchive
from guardian.stream_processors.alerts.engine import AlertEngine
from guardian.stream_processors.alerts.history import NotificationLog
from guardian.stream_processors.alerts.hook import AlertHook
from guardian.stream_processors.alerts.outputs import AlertPublisher, WebhookDispatcher
from guardian.stream_processors.alerts.rules import load_rules
from guardian.stream_processors.alerts.table_store import TableStore
from guardian.stream_processors.batch_source import BatchSource
from guardian.stream_processors.consistency.watch import ConsistencyWatch
from guardian.stream_processors.ingest import IngestLoop
from guardian.stream_processors.outbox import Outbox
from guardian.stream_processors.progress import Progress
from guardian.stream_processors.recovery.fleet import FleetRecovery
from guardian.stream_processors.worker_stats import StatsPublisher

log = get_logger(__name__)
settings = get_settings()

# Faust creates its data directory without parents; the default one is under $XDG_STATE_HOME, which a
# new machine may not have yet.
settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
app = faust.App(
    f"{settings.worker_group}-state",  # Faust's own group: tables only; events use settings.worker_group
    **faust_broker(settings),
    value_serializer="raw",
    key_serializer="raw",
    web_port=settings.worker_web_port,
    web_bind=settings.worker_web_bind,
    web_host="127.0.0.1",
    datadir=str(settings.worker_data_dir),
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    topic_disable_leader=True,  # no __assignor-__leader topic per app: the fleet needs none
)

# Faust's RocksDB store cannot hold this table: its _set() needs the current stream event
# (faust/stores/rocksdb.py asserts current_event()), and this table is written from the ingest
# loop. The memory store is rebuilt from the table's compacted changelog topic at every start,
# which is what makes alert state survive restarts (tests/integration/test_alerts.py).
TABLE_STORE = "memory://"
# Alert state: key -> JSON dict. Global, so every worker holds all of it; use_partitioner, so the
# ingest loop (not a Faust stream) may write it.
alert_state = app.GlobalTable(
    "alert_state",
    schema=faust.Schema(key_serializer="json", value_serializer="json"),
    partitions=settings.events_partitions,
    use_partitioner=True,
    store=TABLE_STORE,
    # Faust applies another worker's changelog records to this copy every `recovery_buffer_size` records
    # (1,000 by default: 7-10 s at 5k events/s). A partition moved after a kill then found its new owner's
    # copy seconds old, and redelivered breaker transitions were notified a second time; with 1 the
    # copies were 1.2 s old at p99 instead of 7.4 s (docs/recovery.md).
    recovery_buffer_size=1,
)

postgres = PostgresSink(settings.postgres_dsn)
hot_view = RedisHotView(settings.redis_url, settings.hot_view_recent_max, settings.live_stream_maxlen)
# The order the stages get a batch in: all share one event loop, so the hot view, which operators
# watch, gets the CPU first and PostgreSQL's row building waits for it.
SINKS = (hot_view, postgres)
STORES_DOWN: set[str] = set()
SOURCE: BatchSource | None = None  # the running worker's consumer, for /healthz
PUBLISHER: AlertPublisher | None = None  # the running worker's alert outputs, for storage job alerts
PUBLISHER_WAIT_S = 60.0
RECOVERY_WAIT_S = 60.0
LOOP_LAG_PROBE_S = 0.05
LOOP_LAG_WARN_S = 0.1  # a stall this long shows in the hot view's p99 (docs/benchmarks.md)
PROGRESS_CHECK_S = 1.0
HOT_VIEW_CHECK_S = 5.0
HOT_VIEW = {"state": "unknown"}  # what the last look at `guardian:hotview` saw, for /healthz


PROGRESS = Progress()
_CHANGELOG_PROBE: Consumer | None = None  # looks up the alert table changelog's end offsets


async def _alert_state_durable() -> None:
    """Wait until Kafka acknowledged the alert table's changelog records written so far. Table writes
    are synchronous dict assignments that Faust queues in its producer buffer; its flush() drains a
    bounded part of that buffer per call, hence the loop, then waits for the sends in flight."""
    producer = app.producer
    while producer.buffer.size:
        await producer.buffer.flush()
    await producer.flush()


def _alert_state_ends() -> dict[int, tuple[int, int]]:
    """The alert table's changelog partitions -> (low, high) watermarks (blocking: for a thread)."""
    global _CHANGELOG_PROBE
    if _CHANGELOG_PROBE is None:
        _CHANGELOG_PROBE = probe(settings, "alert-state-copy")[0]
    topic = alert_state.changelog_topic.get_topic_name()
    partitions = _CHANGELOG_PROBE.list_topics(topic, timeout=10).topics[topic].partitions
    return {partition: watermarks(_CHANGELOG_PROBE, topic, partition) for partition in partitions}


def _alert_state_applied(partition: int) -> int | None:
    """The highest changelog offset of `partition` this worker's copy applied (Faust's recovery counts them)."""
    tp = TP(alert_state.changelog_topic.get_topic_name(), partition)
    recovery = app.tables.recovery
    seen = (recovery.active_offsets.get(tp), recovery.standby_offsets.get(tp))
    return max((offset for offset in seen if offset is not None), default=None)


async def _alert_state_current() -> None:
    await state_copy.caught_up(_alert_state_ends, _alert_state_applied)


def _store_down(name: str, down: bool) -> None:
    (STORES_DOWN.add if down else STORES_DOWN.discard)(name)
    metrics.STORE_DOWN.labels(name).set(1 if down else 0)


@app.service
class IngestService(mode.Service):
    """Runs the ingest loop for as long as the worker runs; leaves the group cleanly on stop."""

    ingest: IngestLoop | None = None  # not `loop`: mode.Service has a `loop` property

    async def on_start(self) -> None:
        # The objects of a started worker (Faust, its libraries) live forever; moving them out of the
        # collector's reach keeps full collections short (measured here: 45-60 ms pauses before).
        gc.collect()
        gc.freeze()
        rules = load_rules(settings.alert_rules_file)  # `guardian worker` validated it already
        outbox = Outbox(client_config(settings))
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.notification_log = NotificationLog(settings.postgres_dsn)
        self.webhooks = WebhookDispatcher(history=self.notification_log)
        global PUBLISHER
        publisher = PUBLISHER = AlertPublisher(
            rules, outbox, settings.alerts_topic, self.redis, self.webhooks, settings.schema_registry_url,
            live_maxlen=settings.live_stream_maxlen,
            history=self.notification_log,
        )  # fmt: skip
        hook = AlertHook(
            # Notified transitions are remembered a day beyond the replay window: a replay never re-pages.
            AlertEngine(rules, TableStore(alert_state),
                        resolved_kept_us=(settings.events_retention_hours + 24) * 3600 * 1_000_000),
            publisher,
            self.redis,
            owned_partitions=lambda: source.assigned,  # `source` is bound below, before any call
            partitions=settings.events_partitions,
            make_state_durable=_alert_state_durable,
            state_current=_alert_state_current,
            log_id=lambda: source.topic_id(),
        )  # fmt: skip
        global SOURCE
        source = SOURCE = BatchSource(
            client_config(settings), settings.worker_group, settings.events_topic, hook.partitions_moved,
            session_timeout_ms=settings.worker_session_timeout_ms,
            heartbeat_interval_ms=settings.worker_heartbeat_interval_ms,
        )  # fmt: skip
        self.recovery = FleetRecovery(settings, self.redis, lambda: source.assigned, alert_state)
        self.ingest = IngestLoop(
            source,
            EventCodec(registry_url=settings.schema_registry_url),
            SINKS,
            outbox,
            settings.dlq_topic,
            hooks=[hook],
            before_commit=[hook.before_commit],
            on_store_down=_store_down,
            rules=EventRules.from_settings(settings),
        )
        log.info("alert rules loaded", file=str(settings.alert_rules_file or "default"),
                 rules=[r.name for r in rules.rules], state_store=TABLE_STORE)  # fmt: skip

    @mode.Service.task
    async def _ingest(self) -> None:
        assert self.ingest is not None
        # Alert state must be restored from its changelog before the engine reads it.
        try:
            await asyncio.wait_for(app.tables.recovery.completed.wait(), timeout=RECOVERY_WAIT_S)
        except TimeoutError:
            log.warning("alert state not recovered yet; starting anyway", waited_s=RECOVERY_WAIT_S)
        try:
            await self.ingest.run()
        except Exception as error:  # a bug: say so where operators look, instead of idling as if healthy
            PROGRESS.failed = repr(error)
            log.exception("ingest loop stopped; restart the worker")
            raise

    @mode.Service.task
    async def _notification_log(self) -> None:
        """Write notification attempts to PostgreSQL in the background (stream_processors/alerts/history.py)."""
        await self.notification_log.run()

    @mode.Service.task
    async def _recovery(self) -> None:
        """Watch the hot view (rebuild it when lost) and checkpoint the fleet's state (recovery/fleet.py)."""
        checkpoint_due = time.monotonic() + settings.checkpoint_interval_s
        at_start = True
        while not self.should_stop:
            try:
                HOT_VIEW["state"] = await self.recovery.watch(at_start=at_start)
                at_start = False
                if time.monotonic() >= checkpoint_due:
                    checkpoint_due = time.monotonic() + settings.checkpoint_interval_s
                    await self.recovery.checkpoint()
            except Exception as exc:  # Redis or Kafka away: tried again at the next tick
                metrics.RECOVERY_ACTIONS.labels("checkpoint or watch", "failed").inc()
                log.warning("recovery step failed", error=repr(exc))
            await asyncio.sleep(min(HOT_VIEW_CHECK_S, settings.checkpoint_interval_s))

    @mode.Service.task
    async def _verify_consistency(self) -> None:
        """Verify Kafka, PostgreSQL and the hot view agree, when this worker leads (consistency/watch.py)."""
        if not settings.verify_interval_s:
            return
        watch = ConsistencyWatch(settings, self.recovery.leads)
        while not self.should_stop:
            await asyncio.sleep(settings.verify_interval_s)
            try:
                notifications = await watch.run(self.redis)
                if notifications and PUBLISHER is not None:
                    await PUBLISHER.publish(notifications)
            except Exception as exc:  # Redis or Kafka away: the next run tries again
                log.warning("periodic verification step failed", error=repr(exc))

    @mode.Service.task
    async def _watch_progress(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(PROGRESS_CHECK_S)
            metrics.COMMIT_AGE.set(PROGRESS.check(self.ingest, SOURCE, settings.worker_stall_s))

    @mode.Service.task
    async def _publish_stats(self) -> None:
        """This worker's counters in Redis for the dashboard (worker_stats.py), which does not scrape /metrics."""
        stats = StatsPublisher(self.redis, settings.worker_stats_ttl_s)
        while not self.should_stop:
            try:
                await stats.publish(SOURCE.assigned if SOURCE else None)
            except Exception as exc:  # Redis away: the snapshot expires and the dashboard shows the worker gone
                log.debug("stats snapshot not written", error=repr(exc))
            await asyncio.sleep(settings.worker_stats_interval_s)

    @mode.Service.task
    async def _watch_loop_lag(self) -> None:
        # Every step of the pipeline shares this event loop: a synchronous stall anywhere delays the
        # hot view and the alerts of every partition, so it is measured and a long one is logged.
        while not self.should_stop:
            began = time.perf_counter()
            await asyncio.sleep(LOOP_LAG_PROBE_S)
            late = time.perf_counter() - began - LOOP_LAG_PROBE_S
            metrics.LOOP_LAG.observe(max(0.0, late))
            if late > LOOP_LAG_WARN_S:
                log.warning("event loop blocked", late_ms=round(late * 1000, 1))

    @mode.Service.timer(5.0)
    async def _export_lag(self) -> None:
        if self.ingest is not None:
            lags = await self.ingest.source.lag()
            for partition, lag in lags.items():
                metrics.CONSUMER_LAG.labels(str(partition)).set(lag)
            PROGRESS.lag = sum(lags.values())

    async def on_stop(self) -> None:
        if self.ingest is not None:
            self.ingest.stopping = True
            leading = self.recovery.leads()
            await self.ingest.source.close()  # commits what is done, so the last checkpoint reflects it
            try:
                await self.recovery.checkpoint(leading=leading)
            except Exception as exc:
                log.warning("no checkpoint at shutdown", error=repr(exc))
            self.recovery.close()
            self.ingest.outbox.close()
            for sink in SINKS:
                await sink.close()
            await self.webhooks.close()
            await self.notification_log.close()  # after the webhooks: their last attempts are rows too
            await self.redis.aclose()


@app.service
class AlertArchiveService(mode.Service):
    """Archives the alerts topic into PostgreSQL (stream_processors/alerts/archive.py), apart from ingest."""

    archive: AlertArchive | None = None

    async def on_start(self) -> None:
        self.archive = AlertArchive(settings)

    @mode.Service.task
    async def _archive(self) -> None:
        assert self.archive is not None
        try:
            await self.archive.run()
        except Exception:  # a bug: the archive stops, ingest goes on; the log and the metrics say so
            metrics.ARCHIVE_ERRORS.labels("stopped").inc()
            log.exception("alert archive stopped; restart the worker")

    async def on_stop(self) -> None:
        if self.archive is not None:
            await self.archive.stop()


async def _storage_upkeep() -> None:
    """Reconcile the store with the settings, run native maintenance, watch the storage jobs: as the
    schema's owner (GUARDIAN_POSTGRES_ADMIN_DSN); the sinks write as the application role."""
    try:
        for line in await storage.upkeep(settings.postgres_admin_dsn, StoragePolicy.from_settings(settings)):
            log.info("storage upkeep", action=line)
    except storage.StorageJobError as exc:  # recorded as the job's failure; the health check below alerts
        log.error("storage maintenance failed", error=str(exc))
    except Exception as exc:  # PostgreSQL down: the sinks retry their writes; upkeep is retried hourly
        log.warning("storage upkeep failed", error=repr(exc))
    try:
        conn = await asyncpg.connect(settings.postgres_admin_dsn, timeout=10)
        try:
            health = await storage.job_health(conn)
        finally:
            await conn.close()
        storage_watch.export(health)
        deadline = time.monotonic() + PUBLISHER_WAIT_S
        while PUBLISHER is None and time.monotonic() < deadline:  # at start, the ingest service makes it
            await asyncio.sleep(0.1)
        if PUBLISHER is not None:
            await PUBLISHER.publish(await storage_watch.notifications(health, PUBLISHER.client))
    except Exception as exc:
        log.warning("storage job health unknown", error=repr(exc))


@app.task
async def prepare_database() -> None:
    """Migrations (idempotent, advisory-locked) and storage upkeep, once at start."""
    from guardian.sinks.migrations import apply_migrations

    try:
        await apply_migrations(settings.postgres_admin_dsn)
    except Exception as exc:  # the sink retries its writes; the worker must not die for this
        log.warning("could not apply migrations at start", error=repr(exc))
    await _storage_upkeep()


@app.timer(interval=3600.0)
async def storage_upkeep() -> None:
    await _storage_upkeep()


@app.page("/metrics")
async def prometheus_metrics(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    # aiohttp refuses a charset inside content_type; Prometheus' text format is UTF-8 anyway.
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4")


@app.page("/healthz")
async def healthz(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    # Not ok (503) once no offset has been committed for GUARDIAN_WORKER_STALL_S while events wait
    # (a store down that long, a stuck step) or the ingest loop stopped: `reason` says what it waits on.
    # A store outage shorter than that, no partitions, or a consumer error (a topic not created yet)
    # leave it ok: the fields say why nothing moves.
    refused = SOURCE.refused if SOURCE else ""
    if refused:  # e.g. revoked credentials: nothing will move until someone fixes them
        return web.json(
            {"status": "refused", "reason": f"kafka refuses the worker: {refused}", "consumer_error": refused},
            status=503,
        )
    return web.json(
        {
            "status": "stalled" if PROGRESS.stalled else "ok",
            "reason": PROGRESS.stalled,
            "stores_down": sorted(STORES_DOWN),
            "hot_view": HOT_VIEW["state"],  # `rebuilding` or `lost` while readers should not trust it
            "partitions": SOURCE.assigned if SOURCE else [],
            "consumer_error": SOURCE.last_error if SOURCE else "",
        },
        status=503 if PROGRESS.stalled else 200,
    )
