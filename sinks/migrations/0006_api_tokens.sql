-- API tokens with roles (viewer < operator < admin). Only a salted hash of each token's secret is
-- stored; the token itself is printed once by `guardian api token create`. Both tables are
-- append-only for the application role: revoking a token is a new row, never an UPDATE, so the
-- role that serves the API cannot un-revoke or rewrite a token.
CREATE TABLE IF NOT EXISTS guardian_api_tokens (
    id          text        PRIMARY KEY,  -- the public part of the token, `gdn_<id>_<secret>`
    name        text        NOT NULL UNIQUE,  -- unique forever: the audit trail names callers by it
    role        text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    salt        bytea       NOT NULL,
    hash        bytea       NOT NULL,  -- sha256(salt || secret)
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL
);

CREATE TABLE IF NOT EXISTS guardian_api_token_revocations (
    token_id    text        PRIMARY KEY REFERENCES guardian_api_tokens (id),
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    revoked_by  text        NOT NULL
);

-- 0004's grant function, plus the append-only tables of later migrations (those that exist), so
-- `guardian stack init` grants them again when the writer role was made after they were.
CREATE OR REPLACE FUNCTION guardian_grant_writer() RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    here text := quote_ident(current_schema());
    appended text;
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
    FOREACH appended IN ARRAY ARRAY['guardian_api_tokens', 'guardian_api_token_revocations',
                                    'guardian_alert_changes', 'guardian_notifications',
                                    'guardian_silences', 'guardian_silence_expirations'] LOOP
        IF to_regclass(appended) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT, INSERT ON %I TO guardian_writer', appended);
        END IF;
    END LOOP;
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %s TO guardian_writer', here);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT SELECT, INSERT ON TABLES TO guardian_writer', here);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %s GRANT USAGE ON SEQUENCES TO guardian_writer', here);
    RETURN true;
END
$fn$;
REVOKE EXECUTE ON FUNCTION guardian_grant_writer() FROM PUBLIC;

SELECT guardian_grant_writer();

-- The API's status shows the newest verification and recovery: found by action, not by a scan of a
-- table that grows with every audited request.
CREATE INDEX IF NOT EXISTS guardian_audit_action ON guardian_audit (action, id DESC);
