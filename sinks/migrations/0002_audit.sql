-- Audit trail: every operation through the API (and operator commands that change state)
-- is recorded with who did it, what, and the outcome. Append-only by convention.
CREATE TABLE IF NOT EXISTS guardian_audit (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      text,
    status      integer,
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS guardian_audit_at ON guardian_audit (at DESC);
