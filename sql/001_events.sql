-- Events: two per proxied call (request, response). DESIGN.md §5-6.
-- Range-partitioned by day on "timestamp"; a TimescaleDB hypertable instead when the extension
-- is available on the server. Primary key (id, timestamp): the partition key must be in it.

CREATE TABLE IF NOT EXISTS govrix_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

DO $$
DECLARE
    use_timescale boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                             AND current_setting('govrix.disable_timescale', true) IS DISTINCT FROM 'on';
    columns text := $cols$
        id                text        NOT NULL,
        parent_id         text,
        agent_id          text        NOT NULL,
        session_id        text        NOT NULL,
        "timestamp"       timestamptz NOT NULL,
        direction         text        NOT NULL CHECK (direction IN ('request', 'response')),
        provider          text,
        endpoint          text,
        model             text,
        prompt_tokens     integer,
        completion_tokens integer,
        total_tokens      integer,
        cached_tokens     integer,
        reasoning_tokens  integer,
        usage_source      text        NOT NULL DEFAULT 'missing'
                                      CHECK (usage_source IN ('reported', 'estimated', 'missing')),
        cost_usd          double precision,
        status_code       integer,
        latency_ms        double precision,
        ttfb_ms           double precision,
        compliance_tag    text        NOT NULL DEFAULT 'default',
        pii_detected      boolean     NOT NULL DEFAULT false,
        pii_types         text[]      NOT NULL DEFAULT '{}',
        pii_findings      jsonb,
        tool_calls        jsonb,
        policy_decisions  jsonb,
        error             text,
        parse_error       text,
        request_bytes     bigint,
        response_bytes    bigint,
        seq               bigint      NOT NULL,
        prev_hash         text        NOT NULL,
        lineage_hash      text        NOT NULL,
        PRIMARY KEY (id, "timestamp")
    $cols$;
BEGIN
    IF to_regclass('events') IS NOT NULL THEN
        RETURN;
    END IF;
    IF use_timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE format('CREATE TABLE events (%s)', columns);
        PERFORM create_hypertable('events', 'timestamp', chunk_time_interval => interval '1 day');
        INSERT INTO govrix_settings VALUES ('events_storage', 'timescaledb')
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    ELSE
        EXECUTE format('CREATE TABLE events (%s) PARTITION BY RANGE ("timestamp")', columns);
        INSERT INTO govrix_settings VALUES ('events_storage', 'partitioned')
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS events_agent_ts_idx   ON events (agent_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS events_session_ts_idx ON events (session_id, "timestamp");
CREATE INDEX IF NOT EXISTS events_ts_brin_idx    ON events USING brin ("timestamp");

-- Day partitions [day, day + 1). Idempotent; a no-op under TimescaleDB (chunks are automatic).
CREATE OR REPLACE FUNCTION govrix_ensure_partitions(from_day date, to_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date := from_day;
    created integer := 0;
    part text;
BEGIN
    IF (SELECT value FROM govrix_settings WHERE key = 'events_storage') = 'timescaledb' THEN
        RETURN 0;
    END IF;
    WHILE d <= to_day LOOP
        part := 'events_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Retention: drop whole day partitions whose upper bound is older than keep_days before today
-- (UTC). Returns the names dropped. Nothing newer than the cut-off is touched.
CREATE OR REPLACE FUNCTION govrix_drop_partitions_older_than(keep_days integer)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    cutoff date := (now() AT TIME ZONE 'UTC')::date - keep_days;
    r record;
BEGIN
    IF keep_days < 0 THEN
        RAISE EXCEPTION 'keep_days must be >= 0, got %', keep_days;
    END IF;
    IF (SELECT value FROM govrix_settings WHERE key = 'events_storage') = 'timescaledb' THEN
        PERFORM drop_chunks('events', older_than => cutoff::timestamp AT TIME ZONE 'UTC');
        RETURN;
    END IF;
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass
          AND c.relname ~ '^events_[0-9]{8}$'
          AND to_date(substring(c.relname from 8), 'YYYYMMDD') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        RETURN NEXT r.relname;
    END LOOP;
END
$$;

SELECT govrix_ensure_partitions(((now() AT TIME ZONE 'UTC')::date - 1), ((now() AT TIME ZONE 'UTC')::date + 7));
