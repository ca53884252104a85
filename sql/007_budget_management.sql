-- Budgets in integer units, managed through the API and applied by every proxy at once
-- (DESIGN.md §4, §6, §7; addon/budgets.py, api/budgets.py).
--
-- * limit_value becomes an exact decimal with micro-dollar precision: a limit of 10 is 10, not
--   9.999999999999998, and the proxy compares integers (tokens, micro-dollars).
-- * budget_usage.usd (double precision dollars) becomes usd_micros (bigint micro-dollars).
-- * budget_reservations: what each proxy instance holds for calls in flight, published at its
--   sync (about once a second); other instances and the API count rows fresher than 10 s.
-- * Every change to a budget row is announced on govrix_budgets; proxies reload at once.
-- * audit_log: every change made through a management route, with the row before and after.

ALTER TABLE budgets ALTER COLUMN limit_value TYPE numeric(20, 6) USING round(limit_value::numeric, 6);

ALTER TABLE budget_usage RENAME COLUMN usd TO usd_micros;
ALTER TABLE budget_usage ALTER COLUMN usd_micros DROP DEFAULT;
ALTER TABLE budget_usage ALTER COLUMN usd_micros TYPE bigint USING round(usd_micros * 1000000)::bigint;
ALTER TABLE budget_usage ALTER COLUMN usd_micros SET DEFAULT 0;

CREATE TABLE IF NOT EXISTS budget_reservations (
    instance     text        NOT NULL,
    usage_key    text        NOT NULL,
    period       text        NOT NULL CHECK (period IN ('daily', 'monthly')),
    period_start date        NOT NULL,
    tokens       bigint      NOT NULL DEFAULT 0,
    usd_micros   bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, usage_key, period, period_start)
);

CREATE INDEX IF NOT EXISTS budget_reservations_key_idx
    ON budget_reservations (usage_key, period, period_start);

-- Payload: {"op": "INSERT|UPDATE|DELETE", "id": <budget id>}. Proxies re-read the (small) table.
CREATE OR REPLACE FUNCTION govrix_budgets_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('govrix_budgets', json_build_object(
        'op', TG_OP, 'id', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS budgets_notify ON budgets;
CREATE TRIGGER budgets_notify
    AFTER INSERT OR UPDATE OR DELETE ON budgets
    FOR EACH ROW EXECUTE FUNCTION govrix_budgets_notify();

-- who: the caller's identity (today "api": one bearer key); target: e.g. 'budget:12'.
CREATE TABLE IF NOT EXISTS audit_log (
    id      bigserial   PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    who     text        NOT NULL,
    action  text        NOT NULL,
    target  text        NOT NULL,
    before  jsonb,
    after   jsonb
);

CREATE INDEX IF NOT EXISTS audit_log_target_idx ON audit_log (target, at);
CREATE INDEX IF NOT EXISTS audit_log_at_idx ON audit_log (at);
