-- Budget leases (DESIGN.md §9, issue 14; addon/budgets/sync.py): a proxy instance admits a call
-- only against budget it holds on lease, so every instance sharing a budget overshoots it by at
-- most one call, and no request waits for a query.
--
-- * A row is what one instance holds of one usage key's period (the key of budget_usage), in
--   tokens and micro-dollars, not yet turned into settled usage: at each sync the instance adds
--   what it settled to budget_usage, shrinks its lease by as much, and tops it up or returns
--   what it does not need.
-- * Granting happens under pg_advisory_xact_lock on the key: a grant never exceeds
--   limit - budget_usage - the other instances' unexpired leases.
-- * expires_at: a few seconds ahead, renewed at every sync by a live holder; an expired row
--   counts for nothing, so a crashed instance holds nothing for long. A clean shutdown deletes
--   its rows (the unused part is returned).

CREATE TABLE IF NOT EXISTS budget_leases (
    instance     text        NOT NULL,
    usage_key    text        NOT NULL,
    period       text        NOT NULL CHECK (period IN ('daily', 'monthly')),
    period_start date        NOT NULL,
    tokens       bigint      NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    usd_micros   bigint      NOT NULL DEFAULT 0 CHECK (usd_micros >= 0),
    granted_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (instance, usage_key, period, period_start)
);

CREATE INDEX IF NOT EXISTS budget_leases_key_idx
    ON budget_leases (usage_key, period, period_start, expires_at);
