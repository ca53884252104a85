-- Budgets (DESIGN.md §6): per agent and global, daily and monthly, in tokens and in USD.
-- Proxies hold usage in memory, reserve before forwarding, settle after, and add their settled
-- deltas to budget_usage about once a second, so usage survives restarts and is shared by every
-- proxy instance.

CREATE TABLE IF NOT EXISTS budgets (
    id          bigserial   PRIMARY KEY,
    scope       text        NOT NULL CHECK (scope IN ('global', 'agent')),
    agent_id    text,
    period      text        NOT NULL CHECK (period IN ('daily', 'monthly')),
    metric      text        NOT NULL CHECK (metric IN ('tokens', 'usd')),
    limit_value double precision NOT NULL CHECK (limit_value >= 0),
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'agent') = (agent_id IS NOT NULL))
);

CREATE UNIQUE INDEX IF NOT EXISTS budgets_unique_idx
    ON budgets (scope, coalesce(agent_id, ''), period, metric);

-- usage_key: 'global' or 'agent:<agent id>'; period_start: the UTC day, or the month's first day.
CREATE TABLE IF NOT EXISTS budget_usage (
    usage_key    text             NOT NULL,
    period       text             NOT NULL CHECK (period IN ('daily', 'monthly')),
    period_start date             NOT NULL,
    tokens       bigint           NOT NULL DEFAULT 0,
    usd          double precision NOT NULL DEFAULT 0,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (usage_key, period, period_start)
);
