-- Storage upkeep in both modes: how long rows are kept, how they are chunked, and whether the
-- jobs that do it are healthy. The numbers are not here: sinks/storage.py reconciles them with
-- the settings (GUARDIAN_RETENTION_DAYS, GUARDIAN_CHUNK_HOURS, GUARDIAN_COMPRESS_AFTER_HOURS) at
-- `guardian stack init` and at every worker start.

-- Runs of the jobs this project runs itself (native mode's maintenance). TimescaleDB's own
-- policy jobs report in timescaledb_information.job_stats / job_errors instead.
CREATE TABLE IF NOT EXISTS guardian_storage_jobs (
    job          text PRIMARY KEY,
    last_start   timestamptz,
    last_success timestamptz,
    last_failure timestamptz,
    last_error   text,
    runs         bigint NOT NULL DEFAULT 0,
    failures     bigint NOT NULL DEFAULT 0
);

-- The range partitions of guardian_events with their bounds (native mode; empty with TimescaleDB).
CREATE OR REPLACE VIEW guardian_event_partitions AS
SELECT c.relname AS name,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lower_bound,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper_bound
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'guardian_events'::regclass
  AND pg_get_expr(c.relpartbound, c.oid) LIKE 'FOR VALUES FROM%';

-- Give [lower, upper) partitions, skipping what existing partitions cover; rows the default
-- partition holds for a new partition's range move into it first (ATTACH would refuse them).
CREATE OR REPLACE FUNCTION guardian_cover_range(lower timestamptz, upper timestamptz)
RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
    cur timestamptz := lower;
    covered_to timestamptz;
    next_start timestamptz;
    stop timestamptz;
    name text;
BEGIN
    WHILE cur < upper LOOP
        SELECT upper_bound INTO covered_to FROM guardian_event_partitions
        WHERE lower_bound <= cur AND upper_bound > cur;
        IF FOUND THEN
            cur := covered_to;
            CONTINUE;
        END IF;
        SELECT min(lower_bound) INTO next_start FROM guardian_event_partitions
        WHERE lower_bound > cur AND lower_bound < upper;
        stop := coalesce(next_start, upper);
        name := format('guardian_events_p%s', to_char(cur AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MI'));
        EXECUTE format('CREATE TABLE %I (LIKE guardian_events INCLUDING DEFAULTS)', name);
        EXECUTE format('WITH moved AS (DELETE FROM guardian_events_default WHERE event_time >= %L'
                       ' AND event_time < %L RETURNING *) INSERT INTO %I SELECT * FROM moved', cur, stop, name);
        EXECUTE format('ALTER TABLE guardian_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, cur, stop);
        RETURN NEXT name;
        cur := stop;
    END LOOP;
END
$fn$;

-- Native mode's maintenance, run hourly by a worker (and by `guardian stack init`):
-- 1. partitions of `chunk` (aligned to the Unix epoch) from now - chunk to now + `ahead`;
-- 2. rows the default partition holds within retention get their partitions (moved, never lost);
-- 3. rows older than `retention` are deleted from the default partition, and partitions whose
--    upper bound is older are dropped: nothing is kept past retention.
-- Rows later than now + ahead stay in the default partition and are reported (event validation
-- refuses times more than GUARDIAN_MAX_FUTURE_SKEW_S ahead, so only a hand-made insert does this).
CREATE OR REPLACE FUNCTION guardian_maintain_native(retention interval, chunk interval, ahead interval)
RETURNS TABLE (action text, detail text) LANGUAGE plpgsql AS $fn$
DECLARE
    width double precision := extract(epoch FROM chunk);
    horizon timestamptz := now() - retention;
    slot timestamptz;
    created text;
    part record;
    n bigint;
BEGIN
    IF width <= 0 THEN
        RAISE EXCEPTION 'chunk interval must be positive, got %', chunk;
    END IF;
    -- 3 first: no partition is made for rows about to be pruned.
    DELETE FROM guardian_events_default WHERE event_time < horizon;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        action := 'pruned'; detail := format('%s rows older than %s from the default partition', n, retention);
        RETURN NEXT;
    END IF;
    FOR part IN SELECT name, upper_bound FROM guardian_event_partitions WHERE upper_bound <= horizon
                ORDER BY lower_bound LOOP
        EXECUTE format('DROP TABLE %I', part.name);
        action := 'dropped'; detail := format('%s (older than %s)', part.name, retention); RETURN NEXT;
    END LOOP;
    -- 1 and 2: the slots that must exist.
    FOR slot IN
        SELECT DISTINCT to_timestamp(floor(extract(epoch FROM t) / width) * width)
        FROM (SELECT generate_series(now() - chunk, now() + ahead, chunk) AS t
              UNION ALL
              SELECT event_time FROM guardian_events_default
              WHERE event_time >= horizon AND event_time < now() + ahead + chunk) times
        ORDER BY 1
    LOOP
        FOR created IN SELECT guardian_cover_range(slot, slot + chunk) LOOP
            action := 'created'; detail := created; RETURN NEXT;
        END LOOP;
    END LOOP;
    SELECT count(*) INTO n FROM guardian_events_default;
    IF n > 0 THEN
        action := 'kept'; detail := format('%s rows in the default partition, later than every partition', n);
        RETURN NEXT;
    END IF;
END
$fn$;

DROP FUNCTION IF EXISTS guardian_ensure_partitions(integer, integer);

-- TimescaleDB mode: the redundant index of earlier versions, and compression set explicitly
-- (each TimescaleDB version has its own default order).
DO $timescale$
BEGIN
    IF (SELECT value FROM guardian_meta WHERE key = 'storage_mode') = 'timescaledb' THEN
        DROP INDEX IF EXISTS guardian_events_event_time_idx;
        ALTER TABLE guardian_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                                         timescaledb.compress_orderby = 'event_time DESC, event_id');
    END IF;
END
$timescale$;
