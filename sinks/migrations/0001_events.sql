-- Guardian events store.
-- One table, keyed (event_time, event_id): event_time never changes for a given
-- event_id, so the key is unique per event and inserts with ON CONFLICT DO NOTHING
-- make redelivery harmless. With TimescaleDB it is a hypertable with compression
-- and retention policies; without it, a natively range-partitioned table with
-- daily partitions managed by guardian_ensure_partitions().

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
    timescale boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                         AND current_setting('shared_preload_libraries') LIKE '%timescaledb%';
BEGIN
    IF timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE format('CREATE TABLE IF NOT EXISTS guardian_events (%s)', columns);
        PERFORM create_hypertable('guardian_events', 'event_time',
                                  chunk_time_interval => interval '1 hour', if_not_exists => true);
        ALTER TABLE guardian_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol');
        PERFORM add_compression_policy('guardian_events', interval '1 day', if_not_exists => true);
        PERFORM add_retention_policy('guardian_events', interval '7 days', if_not_exists => true);
        INSERT INTO guardian_meta VALUES ('storage_mode', 'timescaledb')
            ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    ELSE
        EXECUTE format('CREATE TABLE IF NOT EXISTS guardian_events (%s) PARTITION BY RANGE (event_time)', columns);
        -- Events outside every daily partition (clock skew, very late replays) land here
        -- instead of failing the insert; guardian_ensure_partitions() moves them out.
        CREATE TABLE IF NOT EXISTS guardian_events_default PARTITION OF guardian_events DEFAULT;
        INSERT INTO guardian_meta VALUES ('storage_mode', 'native-partitioning')
            ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    END IF;
END
$migration$;

CREATE INDEX IF NOT EXISTS guardian_events_symbol_time ON guardian_events (symbol, event_time DESC);
CREATE INDEX IF NOT EXISTS guardian_events_detector_time ON guardian_events (detector, event_time DESC);

-- Native mode: create daily partitions from yesterday to `days_ahead` days ahead and
-- drop those entirely older than `retention_days`. Rows that had landed in the default
-- partition for a day that now gets its own partition are moved into it, so creating
-- a partition never fails and never loses a row. A no-op in TimescaleDB mode, where
-- the hypertable's policies do the same job.
CREATE OR REPLACE FUNCTION guardian_ensure_partitions(days_ahead integer DEFAULT 3, retention_days integer DEFAULT 7)
RETURNS TABLE (action text, partition_name text) LANGUAGE plpgsql AS $fn$
DECLARE
    day date;
    name text;
    part record;
BEGIN
    IF (SELECT value FROM guardian_meta WHERE key = 'storage_mode') <> 'native-partitioning' THEN
        RETURN;
    END IF;
    FOR day IN SELECT generate_series(current_date - 1, current_date + days_ahead, interval '1 day')::date LOOP
        name := format('guardian_events_%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE guardian_events INCLUDING DEFAULTS)', name);
            EXECUTE format(
                'WITH moved AS (DELETE FROM guardian_events_default WHERE event_time >= %L AND event_time < %L RETURNING *) '
                'INSERT INTO %I SELECT * FROM moved', day::timestamptz, (day + 1)::timestamptz, name);
            EXECUTE format('ALTER TABLE guardian_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           name, day::timestamptz, (day + 1)::timestamptz);
            action := 'created'; partition_name := name; RETURN NEXT;
        END IF;
    END LOOP;
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'guardian_events'::regclass
          AND c.relname ~ '^guardian_events_[0-9]{8}$'
          AND to_date(substring(c.relname from '[0-9]{8}$'), 'YYYYMMDD') < current_date - retention_days
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        action := 'dropped'; partition_name := part.relname; RETURN NEXT;
    END LOOP;
END
$fn$;

SELECT * FROM guardian_ensure_partitions();
