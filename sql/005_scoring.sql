-- Action risk scoring (DESIGN.md §8): API keys, scored actions, their scores, the durable queue
-- of batch events waiting to be scored, and per-minute activity counts for rate-vs-baseline.

-- Keys are stored as sha256 digests only; the key itself is shown once, at creation.
CREATE TABLE IF NOT EXISTS api_keys (
    id          text PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    customer_id text NOT NULL,
    tier        text NOT NULL CHECK (tier IN ('starter', 'pro', 'enterprise')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_customer_idx ON api_keys (customer_id);

-- One row per submitted action; event ids are unique per customer (idempotency key).
-- `seq` orders actions by arrival, so "before this action" is well defined even for a batch
-- inserted in one statement; history facts only look at lower seq values.
CREATE TABLE IF NOT EXISTS actions (
    customer_id  text NOT NULL,
    event_id     text NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    agent_id     text,
    session_id   text,
    action       text NOT NULL,
    server_key   text,
    resource_key text,
    "timestamp"  timestamptz,
    event        jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id)
);
CREATE INDEX IF NOT EXISTS actions_agent_seq_idx ON actions (customer_id, agent_id, seq DESC);
CREATE INDEX IF NOT EXISTS actions_agent_server_idx
    ON actions (customer_id, agent_id, server_key, seq) WHERE server_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS actions_agent_resource_idx
    ON actions (customer_id, agent_id, resource_key, seq) WHERE resource_key IS NOT NULL;

-- One score per action, ever: the primary key is what makes scoring exactly-once.
CREATE TABLE IF NOT EXISTS scores (
    customer_id      text NOT NULL,
    event_id         text NOT NULL,
    score            smallint NOT NULL CHECK (score BETWEEN 1 AND 100),
    risk_level       text NOT NULL CHECK (risk_level IN ('none', 'low', 'medium', 'high', 'critical')),
    confidence       double precision NOT NULL,
    reasoning        text NOT NULL,
    violations       jsonb NOT NULL DEFAULT '[]',
    compliance_refs  text[] NOT NULL DEFAULT '{}',
    mitigations      text[] NOT NULL DEFAULT '{}',
    score_components jsonb NOT NULL DEFAULT '[]',
    scoring_source   text NOT NULL,
    scorer_version   text NOT NULL,
    scored_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id),
    FOREIGN KEY (customer_id, event_id) REFERENCES actions (customer_id, event_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS scores_customer_time_idx ON scores (customer_id, scored_at DESC, event_id DESC);
CREATE INDEX IF NOT EXISTS scores_customer_level_idx
    ON scores (customer_id, risk_level, scored_at DESC, event_id DESC);

-- Batch events waiting to be scored. A worker locks rows (FOR UPDATE SKIP LOCKED), inserts their
-- scores and deletes them in one transaction; a crash rolls back and the rows are picked again.
-- Rows that fail `max_attempts` times stay here with status 'failed' and their last error.
CREATE TABLE IF NOT EXISTS scoring_queue (
    customer_id  text NOT NULL,
    event_id     text NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    available_at timestamptz NOT NULL DEFAULT now(),
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id),
    FOREIGN KEY (customer_id, event_id) REFERENCES actions (customer_id, event_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS scoring_queue_ready_idx
    ON scoring_queue (available_at) WHERE status = 'pending';

-- Actions per agent per minute: rate over the last hour vs the agent's baseline, read from a few
-- hundred rows at most instead of counting every action of a busy agent.
CREATE TABLE IF NOT EXISTS agent_activity (
    customer_id text NOT NULL,
    agent_id    text NOT NULL,
    minute      timestamptz NOT NULL,
    n           integer NOT NULL,
    PRIMARY KEY (customer_id, agent_id, minute)
);
