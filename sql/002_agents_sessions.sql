-- Agents (the kill switch) and sessions (chain heads). DESIGN.md §3, §6.

CREATE TABLE IF NOT EXISTS agents (
    id            text        PRIMARY KEY,
    name          text        NOT NULL,
    source_ip     text,
    status        text        NOT NULL DEFAULT 'active'
                              CHECK (status IN ('active', 'blocked', 'retired')),
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    identity_kind text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz
);

CREATE INDEX IF NOT EXISTS agents_status_idx ON agents (status);

-- Every change to an agent row is announced so that proxies update their in-memory table at once.
-- Payload: {"op": "INSERT|UPDATE|DELETE", "id": ..., "status": ...}.
CREATE OR REPLACE FUNCTION govrix_agents_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_data agents%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_data := OLD;
    ELSE
        row_data := NEW;
    END IF;
    -- last_seen_at bumps from auto-registration are not status changes: stay quiet.
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status
       AND OLD.name IS NOT DISTINCT FROM NEW.name
       AND OLD.metadata IS NOT DISTINCT FROM NEW.metadata THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('govrix_agents', json_build_object(
        'op', TG_OP, 'id', row_data.id, 'name', row_data.name, 'status', row_data.status)::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS agents_notify ON agents;
CREATE TRIGGER agents_notify
    AFTER INSERT OR UPDATE OR DELETE ON agents
    FOR EACH ROW EXECUTE FUNCTION govrix_agents_notify();

CREATE TABLE IF NOT EXISTS sessions (
    id            text        PRIMARY KEY,
    agent_id      text        NOT NULL,
    started_at    timestamptz NOT NULL,
    last_event_at timestamptz NOT NULL,
    event_count   bigint      NOT NULL DEFAULT 0,
    head_seq      bigint      NOT NULL DEFAULT 0,
    head_hash     text
);

CREATE INDEX IF NOT EXISTS sessions_agent_idx ON sessions (agent_id, last_event_at DESC);
