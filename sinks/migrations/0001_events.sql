-- Guardian events store.
-- One table, keyed (event_time, event_id): event_time never changes for a given
-- event_id, so the key is unique per event and inserts with ON CONFLICT DO NOTHING
-- make redelivery harmless. With TimescaleDB it is a hypertable with compression
-- and retention policies; without it, a natively range-partitioned table whose
-- partitions guardian_maintain_native() keeps (0003_storage.sql).

CREATE TABLE IF NOT EXISTS guardian_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

DO $migration$
DECLARE
    columns text := $cols$
        event_time      timestamptz NOT NULL,
        event_id        uuid        NOT NULL,
        producer_id     text        NOT NULL,
        sequence        bigint      NOT NULL,
        host            text        NOT NULL,
        symbol          text        NOT NULL,
        detector        text        NOT NULL,
        severity        text        NOT NULL,
        schema_version  integer     NOT NULL,
        payload_type    text        NOT NULL,
        payload         jsonb       NOT NULL,
        kafka_partition integer,
        kafka_offset    bigint,
        ingested_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (event_time, event_id)
    $cols$;
    -- Decided by sinks/storage.py's rule (the one `guardian stack status` and the tests use) and
    -- passed in by the migration runner.
    timescale boolean := current_setting('guardian.use_timescaledb', true)::boolean;
BEGIN
    IF timescale IS NULL THEN
        RAISE EXCEPTION 'guardian.use_timescaledb is not set: apply the migrations with guardian stack init';
    END IF;
    IF timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE format('CREATE TABLE IF NOT EXISTS guardian_events (%s)', columns);
        -- No default index: the primary key (event_time, event_id) already serves time ranges.
        -- Chunk interval and policies follow the settings: sinks/storage.py reconciles them.
        PERFORM create_hypertable('guardian_events', 'event_time', create_default_indexes => false,
                                  if_not_exists => true);
        INSERT INTO guardian_meta VALUES ('storage_mode', 'timescaledb')
            ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    ELSE
        EXECUTE format('CREATE TABLE IF NOT EXISTS guardian_events (%s) PARTITION BY RANGE (event_time)', columns);
        -- Events outside every partition (very late replays) land here instead of failing the
        -- insert; guardian_maintain_native() moves them into partitions or prunes them.
        CREATE TABLE IF NOT EXISTS guardian_events_default PARTITION OF guardian_events DEFAULT;
        INSERT INTO guardian_meta VALUES ('storage_mode', 'native-partitioning')
            ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    END IF;
END
$migration$;

CREATE INDEX IF NOT EXISTS guardian_events_symbol_time ON guardian_events (symbol, event_time DESC);
CREATE INDEX IF NOT EXISTS guardian_events_detector_time ON guardian_events (detector, event_time DESC);
