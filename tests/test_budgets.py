"""Budget state against a real PostgreSQL: one kept connection, usage synced, recovery."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from addon.budgets import (
    USD_UNIT,
    Budgets,
    BudgetSpec,
    Cost,
    Denial,
    Reservation,
    seconds_until_reset,
)
from tests.proxyharness import wait_for


def budget_backends(db: psycopg.Connection[Any]) -> list[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'govrix-budgets' "
        "AND datname = current_database()"
    ).fetchall()
    return [int(r[0]) for r in rows]


def usage_tokens(db: psycopg.Connection[Any]) -> float:
    row = db.execute("SELECT coalesce(sum(tokens), 0) FROM budget_usage").fetchone()
    assert row is not None
    return float(row[0])


def test_syncs_share_one_connection_and_survive_its_loss(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    """A connection per sync would cost an authentication handshake every second."""
    spec = BudgetSpec(period="daily", metric="tokens", limit=1e9)
    budgets = Budgets(dsn, configured=[spec], sync_interval=0.05, reload_interval=0.05).start()
    try:
        assert budgets.wait_loaded(5)
        first = wait_for(lambda: budget_backends(db))
        seen = set()
        for _ in range(10):  # ~20 syncs
            time.sleep(0.05)
            seen.update(budget_backends(db))
        assert seen == set(first) and len(first) == 1

        res = budgets.reserve("agt_x", 100, None)
        assert isinstance(res, Reservation)
        budgets.settle(res, 42, None)
        wait_for(lambda: usage_tokens(db) == 42)

        db.execute("SELECT pg_terminate_backend(%s)", (first[0],))
        res = budgets.reserve("agt_x", 100, None)
        assert isinstance(res, Reservation)
        budgets.settle(res, 8, None)
        wait_for(lambda: usage_tokens(db) == 50)  # a new connection took over
        assert budget_backends(db) and budget_backends(db) != first
    finally:
        budgets.stop()
    wait_for(lambda: not budget_backends(db))  # stop() closes it


# -- admission in integer units (no database) -------------------------------------------------
NOON = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)


def local(*specs: BudgetSpec, **kw: Any) -> Budgets:
    return Budgets(None, configured=specs, **kw)


def test_a_limit_of_exactly_ten_admits_exactly_ten_calls_of_one() -> None:
    budgets = local(BudgetSpec(period="daily", metric="tokens", limit=10))
    admitted = 0
    for _ in range(20):
        res = budgets.reserve("agt_a", Cost(1), now=NOON)
        if isinstance(res, Reservation):
            admitted += 1
            budgets.settle(res, 1, None)
    assert admitted == 10


@pytest.mark.parametrize(
    ("limit", "price", "fits"), [(10.0, 1.0, 10), (10.0, 0.1, 100), (1.0, 0.01, 100), (0.3, 0.1, 3)]
)
def test_usd_limits_count_micro_dollars_exactly(limit: float, price: float, fits: int) -> None:
    """In floats 0.1 * 3 > 0.3, so a limit of $0.30 admitted 2 calls of $0.10; in micro-dollars 3."""
    budgets = local(BudgetSpec(period="monthly", metric="usd", limit=limit))
    admitted = 0
    for _ in range(fits * 2):
        res = budgets.reserve("agt_a", Cost(1, round(price * USD_UNIT)), now=NOON)
        if isinstance(res, Reservation):
            admitted += 1
            budgets.settle(res, 1, price)
    assert admitted == fits
    assert budgets.usage(budgets._specs[0], NOON) == (fits * round(price * USD_UNIT), 0)


def test_denial_separates_spent_reserved_and_limit() -> None:
    spec = BudgetSpec(period="daily", metric="tokens", limit=100, agent_id="agt_a")
    budgets = local(spec)
    first = budgets.reserve("agt_a", Cost(60), now=NOON)
    assert isinstance(first, Reservation)
    budgets.settle(first, 30, None)  # the call used less than its bound
    held = budgets.reserve("agt_a", Cost(80), now=NOON)  # 30 + 0 < 100: admitted
    assert isinstance(held, Reservation)

    busy = budgets.reserve("agt_a", Cost(10), now=NOON)  # 30 spent + 80 reserved >= 100
    assert isinstance(busy, Denial)
    assert (busy.reason, busy.limit, busy.spent, busy.reserved, busy.cost) == (
        "reserved",
        100,
        30,
        80,
        10,
    )
    assert busy.retry_after == 1  # budget is free once the call in flight settles
    body = busy.body()
    assert (body["spent"], body["reserved"], body["limit"], body["reason"]) == (
        30,
        80,
        100,
        "reserved",
    )
    assert body["period_ends_at"] == "2026-03-06T00:00:00Z"

    budgets.settle(held, 75, None)  # 105 spent: one call of overshoot at most
    spent = budgets.reserve("agt_a", Cost(1), now=NOON)
    assert isinstance(spent, Denial)
    assert (spent.reason, spent.spent, spent.reserved) == ("spent", 105, 0)
    assert spent.retry_after == 12 * 3600  # until UTC midnight
    assert "used up until 2026-03-06T00:00:00Z" in spent.message("agent a")
    assert budgets.stats.denied_by_reason == {"reserved": 1, "spent": 1}


def test_spent_wins_over_reserved_across_budgets() -> None:
    """When one budget is spent, waiting for another's calls in flight is pointless."""
    budgets = local(
        BudgetSpec(period="daily", metric="tokens", limit=10),
        BudgetSpec(period="monthly", metric="tokens", limit=5, agent_id="agt_a"),
    )
    first = budgets.reserve("agt_a", Cost(5), now=NOON)
    assert isinstance(first, Reservation)
    budgets.settle(first, 5, None)  # agt_a's monthly budget is spent
    other = budgets.reserve("agt_b", Cost(5), now=NOON)  # the global one is now held
    assert isinstance(other, Reservation)
    res = budgets.reserve("agt_a", Cost(1), now=NOON)
    assert isinstance(res, Denial)
    assert (res.reason, res.spec.period, res.retry_after) == (
        "spent",
        "monthly",
        26 * 86_400 + 12 * 3600,
    )


def test_unpriced_calls_refused_or_allowed() -> None:
    spec = BudgetSpec(period="daily", metric="usd", limit=1)
    refused = local(spec).reserve("agt_a", Cost(10, None), now=NOON)
    assert isinstance(refused, Denial) and refused.reason == "unpriced" and refused.retry_after == 0
    allowed = local(spec, unpriced="allow").reserve("agt_a", Cost(10, None), now=NOON)
    assert isinstance(allowed, Reservation) and allowed.usd_micros == 0


def test_the_older_call_form_still_works() -> None:
    budgets = local(BudgetSpec(period="daily", metric="usd", limit=0.000003))
    res = budgets.reserve("agt_a", 100, 0.0000011, NOON)  # rounded up to 2 micro-dollars
    assert isinstance(res, Reservation) and res.usd_micros == 2


def test_seconds_until_reset() -> None:
    assert seconds_until_reset("daily", NOON) == 12 * 3600
    assert seconds_until_reset("monthly", datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)) == 1
    assert seconds_until_reset("monthly", datetime(2026, 12, 31, 0, 0, tzinfo=UTC)) == 86_400


async def test_admit_waits_for_calls_in_flight_and_stops_at_its_deadline() -> None:
    budgets = local(BudgetSpec(period="daily", metric="tokens", limit=100))
    first = budgets.reserve("agt_a", Cost(100))
    assert isinstance(first, Reservation)
    waiting = asyncio.ensure_future(budgets.admit("agt_a", Cost(100), wait=30))
    await asyncio.sleep(0)  # let it register (the assertion below is on its result, not timing)
    assert not waiting.done()
    budgets.settle(first, 40, None)  # 40 spent, nothing held: room for the waiting call
    res = await asyncio.wait_for(waiting, 5)
    assert isinstance(res, Reservation)
    late = await budgets.admit("agt_a", Cost(1), wait=0.05)  # held until the deadline
    assert isinstance(late, Denial) and late.reason == "reserved"
    assert budgets.stats.waited == 2 and budgets._waiters == []


@pytest.mark.parametrize("looseness", [1, 2, 5])
async def test_a_burst_of_50_admits_what_fits_with_one_call_of_overshoot(looseness: int) -> None:
    """50 concurrent calls, each reserved at ``looseness`` times what it really costs: waiting
    admission takes all that fits and overshoots by less than one call."""
    real, limit = 100, 1000  # ten calls fit
    budgets = local(BudgetSpec(period="daily", metric="tokens", limit=limit))

    async def call() -> bool:
        res = await budgets.admit("agt_a", Cost(real * looseness), wait=10)
        if isinstance(res, Denial):
            return False
        await asyncio.sleep(0.001)  # the upstream call
        budgets.settle(res, real, None)
        return True

    admitted = sum(await asyncio.gather(*(call() for _ in range(50))))
    spent, reserved = budgets.usage(budgets._specs[0])
    assert reserved == 0
    assert admitted >= 0.8 * (limit // real)
    assert spent - limit < real  # overshoot below one call


# -- shared through PostgreSQL ------------------------------------------------------------------


def test_a_budget_row_change_is_applied_within_a_second(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    """LISTEN govrix_budgets: no waiting for the periodic re-read (set to a minute here)."""
    budgets = Budgets(dsn, reload_interval=60).start()
    try:
        assert budgets.wait_loaded(5)
        assert budgets.applies("agt_n") == (False, False)
        start = time.monotonic()
        db.execute(
            "INSERT INTO budgets (scope, agent_id, period, metric, limit_value) "
            "VALUES ('agent', 'agt_n', 'daily', 'usd', 2.5)"
        )
        wait_for(lambda: budgets.applies("agt_n") == (True, True), timeout=5, interval=0.005)
        assert time.monotonic() - start < 1.0
        assert budgets._by_agent["agt_n"][0].limit_units == 2_500_000

        start = time.monotonic()
        db.execute("UPDATE budgets SET enabled = false WHERE agent_id = 'agt_n'")
        wait_for(lambda: budgets.applies("agt_n") == (False, False), timeout=5, interval=0.005)
        assert time.monotonic() - start < 1.0
        assert budgets.stats.notifications >= 2
    finally:
        budgets.stop()


def test_usage_is_stored_in_micro_dollars(dsn: str, db: psycopg.Connection[Any]) -> None:
    spec = BudgetSpec(period="monthly", metric="usd", limit=1)
    budgets = Budgets(dsn, configured=[spec], sync_interval=0.05).start()
    try:
        assert budgets.wait_loaded(5)
        for _ in range(3):
            res = budgets.reserve("agt_u", Cost(10, 200_000))
            assert isinstance(res, Reservation)
            budgets.settle(res, 10, 0.1)
        wait_for(
            lambda: db.execute("SELECT usd_micros FROM budget_usage").fetchall() == [(300_000,)]
        )
    finally:
        budgets.stop()


def test_instances_see_each_others_reservations(dsn: str, db: psycopg.Connection[Any]) -> None:
    """Calls in flight on one proxy hold room on every proxy (published at each sync)."""
    spec = BudgetSpec(period="daily", metric="tokens", limit=100)
    a = Budgets(dsn, configured=[spec], sync_interval=0.05).start()
    b = Budgets(dsn, configured=[spec], sync_interval=0.05).start()
    try:
        assert a.wait_loaded(5) and b.wait_loaded(5)
        held = a.reserve("agt_x", Cost(80))
        assert isinstance(held, Reservation)
        wait_for(lambda: b.usage(spec) == (0, 80))
        extra = b.reserve("agt_x", Cost(30))  # 0 + 80 < 100: admitted, and published too
        assert isinstance(extra, Reservation)
        wait_for(lambda: a.usage(spec) == (0, 110))
        refused = a.reserve("agt_x", Cost(1))
        assert isinstance(refused, Denial) and refused.reason == "reserved"

        a.settle(held, 50, None)
        b.settle(extra, 20, None)
        wait_for(lambda: a.usage(spec) == (70, 0) and b.usage(spec) == (70, 0))
        rows = db.execute("SELECT count(*) FROM budget_reservations WHERE tokens > 0").fetchone()
        assert rows == (0,)
    finally:
        a.stop()
        b.stop()
    assert db.execute("SELECT count(*) FROM budget_reservations").fetchone() == (0,)
