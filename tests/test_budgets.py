"""Budget state against a real PostgreSQL: one kept connection, usage synced, recovery."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from addon.budgets import Budgets, BudgetSpec, Reservation
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
