"""The durable scoring queue with real API processes: SIGKILL mid-scoring, two processes sharing.

Each server is `python -m tests.actions_server` (uvicorn) on its own port, against the test's
database. Exactly once is checked three ways: the scores' primary key, count(*) == 1000, and no
worker ever finding a score already there (it logs "already had a score" if it does).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.actions_util import Server, add_key, full_event

N = 1000


def count(db: psycopg.Connection[Any], sql: str) -> int:
    row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def post_batch(server: Server, key: str) -> None:
    events = [full_event(f"q{i:04d}", agent=f"agent-{i % 13}") for i in range(N)]
    r = httpx.post(
        server.url + "/events/batch",
        json={"events": events},
        headers={"X-API-Key": key},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    assert r.json()["count"] == N


def wait_for(db: psycopg.Connection[Any], predicate: Any, what: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count(db, "SELECT count(*) FROM scores")
        if predicate(n):
            return n
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def assert_exactly_once(db: psycopg.Connection[Any]) -> None:
    assert count(db, "SELECT count(*) FROM scores") == N
    assert count(db, "SELECT count(DISTINCT (customer_id, event_id)) FROM scores") == N
    assert count(db, "SELECT count(*) FROM scoring_queue") == 0
    missing = "SELECT count(*) FROM actions a WHERE NOT EXISTS (SELECT 1 FROM scores s WHERE s.customer_id = a.customer_id AND s.event_id = a.event_id)"
    assert count(db, missing) == 0


@pytest.mark.timeout(240)
def test_sigkill_mid_scoring_then_restart_scores_each_event_once(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    key = add_key(db, "acme")
    # Throttled so the kill surely lands mid-way: 10 events per batch, 50 ms between batches.
    slow = {
        "GOVRIX_SCORING_WORKERS": "2",
        "GOVRIX_SCORING_BATCH": "10",
        "GOVRIX_SCORING_PAUSE": "0.05",
    }
    first = Server(dsn, slow)
    try:
        post_batch(first, key)
        wait_for(db, lambda n: n >= 50, "some scores")
        first.kill()
        log_first = first.output()
    finally:
        first.close()
    at_kill = count(db, "SELECT count(*) FROM scores")
    assert 0 < at_kill < N, at_kill
    assert count(db, "SELECT count(*) FROM scoring_queue") == N - at_kill

    second = Server(dsn)
    try:
        wait_for(db, lambda n: n >= N, "all scores")
        time.sleep(0.3)  # let any stray duplicate attempt show itself
        log_second = second.output()
    finally:
        second.close()
    assert_exactly_once(db)
    assert "already had a score" not in log_first + log_second
    assert "Traceback" not in log_second


@pytest.mark.timeout(240)
def test_two_processes_share_the_queue_exactly_once(dsn: str, db: psycopg.Connection[Any]) -> None:
    key = add_key(db, "acme")
    env = {
        "GOVRIX_SCORING_WORKERS": "2",
        "GOVRIX_SCORING_BATCH": "10",
        "GOVRIX_SCORING_PAUSE": "0.01",
    }
    a, b = Server(dsn, env), Server(dsn, env)
    try:
        post_batch(a, key)  # only `a` is told; `b` learns from NOTIFY
        wait_for(db, lambda n: n >= N, "all scores")
        time.sleep(0.3)
        by_a, by_b = a.scored_by_me(), b.scored_by_me()
        logs = a.output() + b.output()
    finally:
        a.close()
        b.close()
    assert_exactly_once(db)
    assert by_a > 0 and by_b > 0, (by_a, by_b)
    assert by_a + by_b == N
    assert "already had a score" not in logs
