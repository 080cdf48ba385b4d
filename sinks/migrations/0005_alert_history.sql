-- Alert and notification history, and silences with who made and ended them.
--
-- Every table here is append-only for the application: guardian_writer gets SELECT and INSERT
-- (0004's default privileges, and explicitly below), never UPDATE or DELETE. Ending a silence is
-- a new row in guardian_silence_expirations. Only the owner deletes, in the retention job
-- (sinks/storage.py: alert_history_retention).

-- One row per alert state change read from guardian.alerts.v1 (the archive in the worker fleet).
-- change_key = sinks.alert_history.notification_key(): the same transition published twice (the
-- outbox is at-least-once) or read twice (a replay, a redelivery) is one row.
CREATE TABLE IF NOT EXISTS guardian_alert_changes (
    id              bigserial PRIMARY KEY,
    change_key      text NOT NULL UNIQUE,
    at              timestamptz NOT NULL,  -- when the change was notified (else its own start/end time)
    fingerprint     text NOT NULL,
    rule            text NOT NULL,
    severity        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('FIRING', 'RESOLVED')),
    symbol          text,
    labels          jsonb NOT NULL DEFAULT '{}',
    summary         text NOT NULL,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz,
    event_id        uuid,         -- the trigger event: guardian_events' key is (event_time, event_id)
    event_time      timestamptz,
    notified_at     timestamptz,  -- null for records written before the field existed
    repeat          boolean NOT NULL DEFAULT false,
    silenced        boolean NOT NULL DEFAULT false,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
-- Keyset pages are (at, id) descending, filtered by symbol, rule or fingerprint, or not at all.
CREATE INDEX IF NOT EXISTS guardian_alert_changes_symbol ON guardian_alert_changes (symbol, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS guardian_alert_changes_rule ON guardian_alert_changes (rule, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS guardian_alert_changes_fingerprint
    ON guardian_alert_changes (fingerprint, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS guardian_alert_changes_at ON guardian_alert_changes (at DESC, id DESC);

-- One row per notification attempt: each webhook POST try, each Redis pub/sub publish, and one
-- row for a silenced notification. A redelivered batch that re-notifies the same transition
-- (same notification_key) inserts nothing.
CREATE TABLE IF NOT EXISTS guardian_notifications (
    id               bigserial PRIMARY KEY,
    notification_key text NOT NULL,
    fingerprint      text NOT NULL,
    symbol           text,
    rule             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('FIRING', 'RESOLVED')),
    channel          text NOT NULL CHECK (channel IN ('webhook', 'redis')),
    receiver         text NOT NULL,  -- scheme://host[:port] of a webhook (never its path or credentials)
    attempt          integer NOT NULL CHECK (attempt >= 1),
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retried', 'failed', 'silenced')),
    http_status      integer,
    error            text,
    latency_s        double precision,
    at               timestamptz NOT NULL,
    UNIQUE (notification_key, receiver, attempt, channel)
);
CREATE INDEX IF NOT EXISTS guardian_notifications_fingerprint ON guardian_notifications (fingerprint, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS guardian_notifications_symbol ON guardian_notifications (symbol, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS guardian_notifications_at ON guardian_notifications (at DESC, id DESC);

-- Silences as made (the live ones are the Redis hash guardian:silences, which the engine reads).
CREATE TABLE IF NOT EXISTS guardian_silences (
    id         text PRIMARY KEY,
    matchers   jsonb NOT NULL,
    comment    text NOT NULL DEFAULT '',
    starts_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    created_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS guardian_silences_starts_at ON guardian_silences (starts_at DESC, id DESC);

-- A silence ended before its expiry: at most one row per silence.
CREATE TABLE IF NOT EXISTS guardian_silence_expirations (
    silence_id text PRIMARY KEY REFERENCES guardian_silences (id),
    at         timestamptz NOT NULL DEFAULT now(),
    by         text NOT NULL
);

-- The application role gets SELECT and INSERT on these tables from 0004's default privileges; 0006's
-- guardian_grant_writer() names them too, for a role made after the migrations ran.
