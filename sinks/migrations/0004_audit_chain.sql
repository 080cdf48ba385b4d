-- The audit trail becomes tamper-evident and append-only for the application.
--
-- 1. Each row stores the hash of the row before it (prev_hash) and its own hash, computed by
--    guardian_audit_hash() over a canonical text of the row: editing a row breaks its own hash,
--    deleting one breaks the next row's prev_hash (`guardian audit verify`).
-- 2. A BEFORE INSERT trigger builds the chain: appends are serialized by a transaction-level
--    advisory lock, and the id is taken under that lock, so chain order = id order.
-- 3. UPDATE, DELETE and TRUNCATE are refused by triggers (for the owner too, until it disables them);
--    the application's role (a member of guardian_writer) has no such privilege in the first place.

ALTER TABLE guardian_audit
    ADD COLUMN IF NOT EXISTS duration_s double precision,
    ADD COLUMN IF NOT EXISTS prev_hash  bytea,
    ADD COLUMN IF NOT EXISTS hash       bytea;

-- record() used to put the duration into detail: move it to its column.
UPDATE guardian_audit
SET duration_s = (detail->>'duration_s')::double precision, detail = detail - 'duration_s'
WHERE jsonb_typeof(detail->'duration_s') = 'number';

-- The canonical form of a row, hashed: a JSON array of its fields in a fixed order. Nothing in it
-- depends on the session: `at` as integer microseconds since the Unix epoch (not a text that follows
-- the TimeZone setting), detail as jsonb's normalized text, duration_s through numeric (15 significant
-- digits, not extra_float_digits), prev_hash in hex. NULL stays distinct from ''.
CREATE OR REPLACE FUNCTION guardian_audit_hash(
    id bigint, at timestamptz, actor text, action text, target text, status integer, detail jsonb,
    duration_s double precision, prev_hash bytea
) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT sha256(convert_to(jsonb_build_array(
        id,
        (extract(epoch FROM at) * 1000000)::bigint,
        actor,
        action,
        target,
        status,
        detail::text,
        duration_s::numeric::text,
        encode(prev_hash, 'hex')
    )::text, 'UTF8'))
$fn$;

-- The first row's prev_hash: 32 zero bytes.
CREATE OR REPLACE FUNCTION guardian_audit_genesis() RETURNS bytea LANGUAGE sql IMMUTABLE AS $fn$
    SELECT decode(repeat('00', 32), 'hex')
$fn$;

-- Chain the rows written before this migration, in id order.
DO $backfill$
DECLARE
    r record;
    prev bytea := guardian_audit_genesis();
BEGIN
    FOR r IN SELECT * FROM guardian_audit ORDER BY id LOOP
        UPDATE guardian_audit
        SET prev_hash = prev,
            hash = guardian_audit_hash(r.id, r.at, r.actor, r.action, r.target, r.status, r.detail,
                                       r.duration_s, prev)
        WHERE id = r.id
        RETURNING hash INTO prev;
    END LOOP;
END
$backfill$;

-- The trigger is the only source of ids (a default would burn a second number per row).
ALTER TABLE guardian_audit ALTER COLUMN id DROP DEFAULT;

CREATE OR REPLACE FUNCTION guardian_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    audit_table text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);  -- never a temp table's shadow
    last_hash bytea;
BEGIN
    -- One append at a time, until the inserting transaction ends: the row before this one is
    -- committed (or rolled back) before the next append reads it.
    PERFORM pg_advisory_xact_lock(113753843721313);  -- 0x677561726461, "guarda"
    NEW.id := nextval(pg_get_serial_sequence(audit_table, 'id'));
    NEW.at := clock_timestamp();  -- the server's time, under the lock: `at` follows id order
    EXECUTE format('SELECT hash FROM %s ORDER BY id DESC LIMIT 1', audit_table) INTO last_hash;
    NEW.prev_hash := coalesce(last_hash, guardian_audit_genesis());
    NEW.hash := guardian_audit_hash(NEW.id, NEW.at, NEW.actor, NEW.action, NEW.target, NEW.status, NEW.detail,
                                    NEW.duration_s, NEW.prev_hash);
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION guardian_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'guardian_audit is append-only (% refused)', TG_OP
        USING HINT = 'rows are hash-chained: guardian audit verify reports any change';
END
$fn$;

DROP TRIGGER IF EXISTS guardian_audit_chain ON guardian_audit;
CREATE TRIGGER guardian_audit_chain BEFORE INSERT ON guardian_audit
    FOR EACH ROW EXECUTE FUNCTION guardian_audit_chain();
DROP TRIGGER IF EXISTS guardian_audit_no_change ON guardian_audit;
CREATE TRIGGER guardian_audit_no_change BEFORE UPDATE OR DELETE ON guardian_audit
    FOR EACH ROW EXECUTE FUNCTION guardian_audit_append_only();
DROP TRIGGER IF EXISTS guardian_audit_no_truncate ON guardian_audit;
CREATE TRIGGER guardian_audit_no_truncate BEFORE TRUNCATE ON guardian_audit
    FOR EACH STATEMENT EXECUTE FUNCTION guardian_audit_append_only();

-- Least privilege: guardian_writer is what the application's login role (guardian_app locally,
-- made by `guardian stack init`) is a member of. It reads everything, appends events and audit
-- rows, and can change or delete nothing. The owner (the migrating role) keeps storage upkeep.
-- A function, so `guardian stack init` runs it again (idempotent) after an administrator made the
-- role for an owner without CREATEROLE. False when there is no guardian_writer.
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
    -- Tables and sequences later migrations create (as this role, in this schema).
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT SELECT, INSERT ON TABLES TO guardian_writer', here);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT USAGE ON SEQUENCES TO guardian_writer', here);
    RETURN true;
END
$fn$;
REVOKE EXECUTE ON FUNCTION guardian_grant_writer() FROM PUBLIC;

SELECT guardian_grant_writer();
