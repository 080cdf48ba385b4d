"""Prometheus metrics of a worker, served on its web port at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("guardian_worker_events", "Events processed", ["agent"])
BATCH_SIZE = Histogram(
    "guardian_worker_batch_size", "Events per batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000)
)
SINK_SECONDS = Histogram(
    "guardian_worker_sink_write_seconds",
    "Time to write one batch into a store (retries included)",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DLQ = Counter("guardian_worker_dlq", "Records sent to the dead-letter topic, by rule, store or codec error", ["reason"])
STORE_DOWN = Gauge("guardian_worker_store_down", "1 while a store refuses writes and the worker retries", ["sink"])
EVENT_LAG = Histogram(
    "guardian_worker_emit_to_store_seconds",
    "From event time to stored in every sink",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CONSUMER_LAG = Gauge("guardian_worker_consumer_lag", "Records behind the high watermark", ["partition"])
ALERTS = Counter(
    "guardian_worker_alert_notifications", "Alert state changes and repeats", ["rule", "severity", "status", "repeat"]
)
ALERTS_FIRING = Gauge("guardian_worker_alerts_firing", "Alerts firing now (all workers; Redis active set)")
WEBHOOKS = Counter("guardian_worker_webhook_deliveries", "Webhook POSTs by outcome", ["result"])
LOOP_LAG = Histogram(
    "guardian_worker_loop_lag_seconds",
    "How late the event loop ran a 50 ms timer: time the loop spent blocked by synchronous work",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
COMMIT_AGE = Gauge(
    "guardian_worker_commit_age_seconds",
    "Seconds since this worker's last offset commit while events wait (0 while nothing waits)",
)
SINK_REFUSED = Counter("guardian_worker_store_refused", "Events a store refused for good (dead-lettered)", ["sink"])
STORAGE_JOB_FAILING = Gauge(
    "guardian_storage_job_failing",
    "1 while a storage job's last run failed (retention, partitions, compression)",
    ["storage_job"],  # not "job": Prometheus gives every scraped target a "job" label
)
STORAGE_JOB_LAST_SUCCESS = Gauge(
    "guardian_storage_job_last_success_timestamp_seconds",
    "When a storage job last succeeded (0: never)",
    ["storage_job"],
)
RECOVERY_ACTIONS = Counter(
    "guardian_recovery_actions",
    "Recovery actions by outcome: checkpoint written or skipped, hot view rebuild started/finished/failed, "
    "a checkpoint or watch step that failed",
    ["action", "outcome"],
)
RECOVERY_CHECKPOINT_SECONDS = Histogram(
    "guardian_recovery_checkpoint_seconds",
    "Time to take and write one fleet checkpoint",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECOVERY_CHECKPOINT_BYTES = Gauge("guardian_recovery_checkpoint_bytes", "Size of the last fleet checkpoint written")
RECOVERY_CHECKPOINT_TIMESTAMP = Gauge(
    "guardian_recovery_checkpoint_timestamp_seconds", "When this worker last wrote a fleet checkpoint (0: never)"
)
RECOVERY_REBUILDING = Gauge(
    "guardian_recovery_hot_view_rebuilding", "1 while the Redis hot view is incomplete: being rebuilt, or lost"
)
CONSISTENCY_LAST_RUN = Gauge(
    "guardian_consistency_last_run_timestamp_seconds", "When this worker last finished a periodic verification"
)
CONSISTENCY_SECONDS = Gauge("guardian_consistency_duration_seconds", "How long the last periodic verification took")
CONSISTENCY_EVENTS = Gauge("guardian_consistency_events_verified", "Kafka offsets the last verification covered")
CONSISTENCY_MISMATCHES = Gauge(
    "guardian_consistency_mismatches",
    "Mismatches the last verification found, by kind (missing_row, lost_sequence, duplicate_sequence, stale_key, "
    "corrupt_key, missing_key)",
    ["kind"],
)
CONSISTENCY_RUNS = Counter("guardian_consistency_runs", "Periodic verifications by outcome: ok, mismatch, failed",
                           ["outcome"])  # fmt: skip
ARCHIVE_ROWS = Counter(
    "guardian_worker_alert_archive_rows",
    "Alert changes the archive read from the alerts topic: archived (new rows), duplicate (archived already) or "
    "refused (PostgreSQL refused the row's data; skipped)",
    ["result"],
)
ARCHIVE_ERRORS = Counter(
    "guardian_worker_alert_archive_errors",
    "Alert archive failures: write (PostgreSQL refused or was away; retried, offsets not committed) or decode "
    "(a record that is no AlertEvent; skipped) or stopped (the archive loop died: a bug)",
    ["kind"],
)
NOTIFICATION_ROWS = Counter(
    "guardian_worker_notification_rows",
    "Notification attempt rows: written, duplicate (there already), overflow (queue full, dropped) or refused "
    "(PostgreSQL refused the data, dropped)",
    ["result"],
)
NOTIFICATION_LOG_ERRORS = Counter(
    "guardian_worker_notification_log_errors", "Failed writes of notification attempt rows (retried)"
)
ALERT_STATE_CATCH_UP_SECONDS = Histogram(
    "guardian_alert_state_catch_up_seconds",
    "Wait, when partitions move, until this worker's alert state copy has applied its changelog to the end",
    ["outcome"],  # caught_up, gave_up (WAIT_S passed) or failed (Kafka unreachable)
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ALERTS_ALREADY_ANNOUNCED = Counter(
    "guardian_worker_alerts_already_announced",
    "Alert transitions left out because the fleet announced them already (events processed twice)",
)
