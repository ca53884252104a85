-- Policies stored as versions, and the console's login sessions (issue 12; DESIGN.md §4, §7).
--
-- * policy_versions: every policy ever made active, newest = active (the highest id). A version
--   holds the whole YAML text, its sha256 checksum, who made it and from where ('api' for
--   PUT /api/v1/policies, 'file:<path>' when GOVRIX_POLICY_FILE changed on a proxy's disk).
--   Rolling back is putting an older text again: history is never rewritten.
-- * Every new version is announced on govrix_policies (payload: the version id); every proxy
--   loads it within a second and keeps its current rules when a version does not compile.
-- * console_sessions: one row per console login; the cookie holds a random token whose sha256
--   is stored here (never the token, never the API key), with its CSRF token and expiry.
-- * audit_log (sql/007) also receives agent, key and policy changes now: action names are
--   'agent.update', 'agent.retire', 'key.create', 'key.revoke', 'policy.put'.

CREATE TABLE IF NOT EXISTS policy_versions (
    id          bigserial   PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    who         text        NOT NULL,
    source      text        NOT NULL,
    checksum    text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    rule_count  integer     NOT NULL CHECK (rule_count >= 0),
    yaml        text        NOT NULL
);

CREATE INDEX IF NOT EXISTS policy_versions_checksum_idx ON policy_versions (checksum);

CREATE OR REPLACE FUNCTION govrix_policies_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('govrix_policies', NEW.id::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS policies_notify ON policy_versions;
CREATE TRIGGER policies_notify
    AFTER INSERT ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION govrix_policies_notify();

CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash  bytea       PRIMARY KEY,
    csrf        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS console_sessions_expires_idx ON console_sessions (expires_at);
