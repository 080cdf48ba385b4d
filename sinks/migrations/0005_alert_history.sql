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

-- 0004's grants again, plus these tables: `guardian stack init` calls it when the role came after
-- the migrations (the default privileges only cover tables created after them).
CREATE OR REPLACE FUNCTION guardian_grant_writer() RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    here text := quote_ident(current_schema());
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'guardian_writer') THEN
        BEGIN
            CREATE ROLE guardian_writer NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'guardian_writer not created (% has no CREATEROLE): docs/operations.md says what '
                             'an administrator runs', current_user;
                RETURN false;
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database of the cluster migrating at the same time made it
        END;
    END IF;
    GRANT SELECT, INSERT ON guardian_events, guardian_audit TO guardian_writer;
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO guardian_writer', pg_get_serial_sequence('guardian_audit', 'id'));
    GRANT SELECT ON guardian_meta, guardian_storage_jobs, guardian_event_partitions, guardian_schema_migrations
        TO guardian_writer;
    GRANT SELECT, INSERT ON guardian_alert_changes, guardian_notifications, guardian_silences,
        guardian_silence_expirations TO guardian_writer;
    EXECUTE format('GRANT USAGE ON SEQUENCE %s, %s TO guardian_writer',
                   pg_get_serial_sequence('guardian_alert_changes', 'id'),
                   pg_get_serial_sequence('guardian_notifications', 'id'));
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT SELECT, INSERT ON TABLES TO guardian_writer', here);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT USAGE ON SEQUENCES TO guardian_writer', here);
    RETURN true;
END
$fn$;
REVOKE EXECUTE ON FUNCTION guardian_grant_writer() FROM PUBLIC;

SELECT guardian_grant_writer();
