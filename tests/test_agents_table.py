"""addon/agents.py: the in-memory agent table behind the kill switch.

``decide`` is a table over (fail mode, loaded, live, known status); the listener is tested against
a real PostgreSQL: the first load, NOTIFY-driven updates and deletes, the periodic full re-read
that catches what no NOTIFY announced, malformed payloads, and a reconnect after the server
drops the connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from addon.agents import ALLOW, BLOCKED, RETIRED, UNAVAILABLE, AgentTable
from tests.apiutil import add_agent


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait for ``condition`` with a deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def table_with(fail_mode: str, *, loaded: bool, live: bool, status: str | None) -> AgentTable:
    t = AgentTable(None, fail_mode=fail_mode)
    if status is not None:
        t._apply(json.dumps({"op": "INSERT", "id": "agt_x", "status": status}))
    t.loaded, t.live = loaded, live
    return t


# (fail mode, loaded, live, status of agt_x in the table, decision)
DECISIONS = [
    # live table: the status decides, unknown agents pass, in every mode
    *[(m, True, True, s, d) for m in ("last_known", "fail_open", "fail_closed")
      for s, d in ((None, ALLOW), ("active", ALLOW), ("blocked", BLOCKED), ("retired", RETIRED))],
    # last_known: the last table applies; never loaded means nothing is known, so all pass
    ("last_known", True, False, "blocked", BLOCKED),
    ("last_known", True, False, None, ALLOW),
    ("last_known", False, False, None, ALLOW),
    # fail_open: while not live, even blocked agents pass
    ("fail_open", True, False, "blocked", ALLOW),
    ("fail_open", True, False, "retired", ALLOW),
    ("fail_open", False, False, None, ALLOW),
    # fail_closed: never loaded refuses all; after that, known statuses apply, unknown refused
    ("fail_closed", False, False, None, UNAVAILABLE),
    ("fail_closed", False, False, "active", UNAVAILABLE),
    ("fail_closed", True, False, "active", ALLOW),
    ("fail_closed", True, False, "blocked", BLOCKED),
    ("fail_closed", True, False, None, UNAVAILABLE),
]  # fmt: skip


@pytest.mark.parametrize(("mode", "loaded", "live", "status", "decision"), DECISIONS)
def test_decide(mode: str, loaded: bool, live: bool, status: str | None, decision: str) -> None:
    assert table_with(mode, loaded=loaded, live=live, status=status).decide("agt_x") == decision


@pytest.mark.parametrize(
    ("payload", "after"),
    [
        ('{"op": "UPDATE", "id": "agt_x", "status": "blocked"}', "blocked"),
        ('{"op": "DELETE", "id": "agt_x", "status": "active"}', None),
        ('{"op": "DELETE", "id": "agt_unknown"}', "active"),
        ('{"op": "UPDATE", "id": "agt_x"}', "active"),  # no status: nothing to apply
        ('{"op": "UPDATE", "id": "agt_x", "status": 3}', "active"),
        ('{"status": "blocked"}', "active"),  # no id
        ("not json", "active"),
        ("[1, 2]", "active"),
        ("", "active"),
    ],
)
def test_apply_payloads(payload: str, after: str | None) -> None:
    t = table_with("last_known", loaded=True, live=True, status="active")
    t._apply(payload)
    assert t._status.get("agt_x") == after
    assert t.stats.notifications == 2  # the setup's and this one, malformed or not


def test_set_local_never_overrides_a_known_status() -> None:
    t = table_with("last_known", loaded=True, live=True, status="blocked")
    t.set_local("agt_x", "active")
    t.set_local("agt_new", "active")
    assert t.decide("agt_x") == BLOCKED and t.known("agt_new")


@pytest.fixture
def table(dsn: str, db: psycopg.Connection[Any]) -> Iterator[AgentTable]:
    add_agent(db, "agt_active", "a")
    add_agent(db, "agt_blocked", "b", status="blocked")
    add_agent(db, "agt_retired", "r", status="retired")
    t = AgentTable(dsn, refresh_interval=3600, reconnect_delay=0.05).start()
    assert t.wait_loaded(10)
    assert until(lambda: t.live)
    yield t
    t.stop()


def test_first_load(table: AgentTable) -> None:
    assert [table.decide(a) for a in ("agt_active", "agt_blocked", "agt_retired", "agt_new")] == [
        ALLOW,
        BLOCKED,
        RETIRED,
        ALLOW,
    ]
    assert table.stats.full_loads == 1 and table.known("agt_retired")


def test_notify_updates_and_deletes(table: AgentTable, db: psycopg.Connection[Any]) -> None:
    db.execute("UPDATE agents SET status = 'blocked' WHERE id = 'agt_active'")
    assert until(lambda: table.decide("agt_active") == BLOCKED)
    db.execute("UPDATE agents SET status = 'active' WHERE id = 'agt_blocked'")
    assert until(lambda: table.decide("agt_blocked") == ALLOW)
    add_agent(db, "agt_late", "late", status="retired")
    assert until(lambda: table.decide("agt_late") == RETIRED)
    db.execute("DELETE FROM agents WHERE id = 'agt_late'")
    assert until(lambda: not table.known("agt_late"))
    assert table.stats.full_loads == 1  # all of it by NOTIFY, no re-read


def test_quiet_updates_send_no_notification(table: AgentTable, db: psycopg.Connection[Any]) -> None:
    """last_seen_at bumps (auto-registration) are not status changes: the trigger stays quiet."""
    db.execute("UPDATE agents SET last_seen_at = now() WHERE id = 'agt_active'")
    db.execute("UPDATE agents SET status = 'retired' WHERE id = 'agt_retired'")  # unchanged
    db.execute("UPDATE agents SET status = 'blocked' WHERE id = 'agt_active'")
    assert until(lambda: table.decide("agt_active") == BLOCKED)
    assert table.stats.notifications == 1


def test_malformed_notification_is_ignored(table: AgentTable, db: psycopg.Connection[Any]) -> None:
    db.execute("SELECT pg_notify('govrix_agents', 'garbage')")
    db.execute("SELECT pg_notify('govrix_agents', '{\"op\": \"UPDATE\"}')")
    assert until(lambda: table.stats.notifications == 2)
    assert table.live and table.decide("agt_blocked") == BLOCKED


def test_full_reload_catches_unannounced_changes(dsn: str, db: psycopg.Connection[Any]) -> None:
    add_agent(db, "agt_a", "a")
    t = AgentTable(dsn, refresh_interval=0.2, reconnect_delay=0.05).start()
    try:
        assert t.wait_loaded(10)
        db.execute("ALTER TABLE agents DISABLE TRIGGER agents_notify")  # this test's database
        db.execute("UPDATE agents SET status = 'blocked' WHERE id = 'agt_a'")
        add_agent(db, "agt_b", "b", status="retired")
        assert until(lambda: t.decide("agt_a") == BLOCKED and t.decide("agt_b") == RETIRED)
        assert t.stats.full_loads >= 2 and t.stats.notifications == 0
    finally:
        t.stop()


def test_reconnects_after_the_server_drops_it(
    table: AgentTable, db: psycopg.Connection[Any]
) -> None:
    killed = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'govrix-agents' AND datname = current_database()"
    ).fetchone()
    assert killed == (1,)
    assert until(lambda: table.stats.reconnects == 1 and table.live)
    assert table.stats.last_error is not None
    assert table.decide("agt_blocked") == BLOCKED  # the last known table held meanwhile
    db.execute("UPDATE agents SET status = 'active' WHERE id = 'agt_blocked'")
    assert until(lambda: table.decide("agt_blocked") == ALLOW)  # listening again
    assert table.stats.full_loads == 2  # re-read on reconnect: nothing missed while away


def test_unreachable_database(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn) | {"port": 1, "connect_timeout": 1}
    bad = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    closed = AgentTable(bad, fail_mode="fail_closed", reconnect_delay=0.05).start()
    opened = AgentTable(bad, fail_mode="last_known", reconnect_delay=0.05).start()
    try:
        assert until(lambda: closed.stats.last_error is not None)
        assert not closed.wait_loaded(0.1) and not closed.live
        assert closed.decide("agt_any") == UNAVAILABLE
        assert opened.decide("agt_any") == ALLOW
    finally:
        closed.stop()
        opened.stop()
