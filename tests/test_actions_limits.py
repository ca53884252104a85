"""Rate limits, settings from the environment, and the queue's retry/give-up path."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from api.actions import ConfigError, RateLimit, Settings
from api.actions.queue import score_claimed
from api.actions.ratelimit import RateLimiter
from api.actions.scoring_app import create_app
from api.scoring import Engine
from tests.actions_util import add_key, event


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_refill_and_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter({"starter": RateLimit(10, 20)}, clock)
    assert [limiter.take("acme", "starter") for _ in range(20)] == [0] * 20
    assert limiter.take("acme", "starter") == 1  # integer seconds, at least 1
    assert limiter.take("globex", "starter") == 0  # buckets are per customer
    clock.now += 0.1  # one token back at 10/s
    assert limiter.take("acme", "starter") == 0
    assert limiter.take("acme", "starter") == 1
    clock.now += 60  # refills up to the burst, not beyond
    assert sum(limiter.take("acme", "starter") == 0 for _ in range(50)) == 20
    slow = RateLimiter({"starter": RateLimit(0.25, 1)}, clock)
    assert slow.take("a", "starter") == 0
    assert slow.take("a", "starter") == 4  # ceil(1 / 0.25)


@pytest.mark.parametrize(
    ("env", "tier", "expected"),
    [
        ({}, "starter", RateLimit(10, 20)),
        ({}, "pro", RateLimit(100, 200)),
        ({}, "enterprise", RateLimit(1000, 2000)),
        ({"GOVRIX_RATE_PRO": "50"}, "pro", RateLimit(50, 100)),
        ({"GOVRIX_RATE_STARTER": "5:7"}, "starter", RateLimit(5, 7)),
    ],
)
def test_rates_from_env(env: dict[str, str], tier: str, expected: RateLimit) -> None:
    assert Settings.from_env(env).rates[tier] == expected


@pytest.mark.parametrize(
    "env",
    [
        {"GOVRIX_RATE_PRO": "fast"},
        {"GOVRIX_RATE_PRO": "0"},
        {"GOVRIX_RATE_PRO": "10:0"},
        {"GOVRIX_LLM_ENABLED": "1"},
        {"GOVRIX_SCORING_WORKERS": "-1"},
    ],
)
def test_bad_env_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_llm_config_off_unless_enabled() -> None:
    base = {"GOVRIX_LLM_BASE_URL": "http://127.0.0.1:9/v1", "GOVRIX_LLM_MODEL": "m"}
    assert Settings.from_env(base).llm is None
    llm = Settings.from_env({**base, "GOVRIX_LLM_ENABLED": "1", "GOVRIX_LLM_API_KEY": "k"}).llm
    assert llm is not None and llm.enabled and llm.model == "m" and llm.api_key == "k"
    assert "k" not in repr(llm)


def test_burst_above_the_tier_gets_429_then_recovers(dsn: str, db: psycopg.Connection[Any]) -> None:
    """Default starter limit (10/s, burst 20): 40 requests at once, then one a second later."""
    key = add_key(db, "acme", "starter")
    with TestClient(create_app(dsn, Settings(workers=0))) as client:
        answers = [
            client.post("/events", json=event(f"r{i}"), headers={"X-API-Key": key})
            for i in range(40)
        ]
        limited = [r for r in answers if r.status_code == 429]
        assert limited, [r.status_code for r in answers]
        assert {r.status_code for r in answers} == {200, 429}
        for r in limited:
            assert int(r.headers["retry-after"]) >= 1
            assert "rate limit" in r.json()["error"]
        # Refused requests stored nothing.
        assert db.execute("SELECT count(*) FROM actions").fetchone() == (40 - len(limited),)
        time.sleep(1.1)
        r = client.post("/events", json=event("later"), headers={"X-API-Key": key})
        assert r.status_code == 200, r.text


async def test_failing_event_is_retried_then_marked_failed(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    """An event that cannot be scored gets attempts, last_error, backoff, then 'failed'; the
    good events of the same claimed batch are scored regardless."""
    db.execute(
        "INSERT INTO actions (customer_id, event_id, action, event) VALUES"
        " ('acme', 'good', 'a:b:read', '{\"event_id\": \"good\", \"action\": \"a:b:read\"}'),"
        " ('acme', 'bad', 'x', '{\"event_id\": \"bad\", \"action\": \"nope\"}')"
    )
    db.execute(
        "INSERT INTO scoring_queue (customer_id, event_id) VALUES ('acme', 'good'), ('acme', 'bad')"
    )
    settings = Settings(max_attempts=2, backoff_base=0.0, backoff_max=0.0)
    engine = Engine.load()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await score_claimed(conn, engine, settings) == 2
        row = db.execute("SELECT status, attempts, last_error FROM scoring_queue").fetchall()
        assert len(row) == 1 and row[0][:2] == ("pending", 1)
        assert "ValidationError" in row[0][2] and "action" in row[0][2]
        assert db.execute("SELECT event_id FROM scores").fetchall() == [("good",)]
        assert await score_claimed(conn, engine, settings) == 1
        assert db.execute("SELECT status, attempts FROM scoring_queue").fetchall() == [
            ("failed", 2)
        ]
        assert await score_claimed(conn, engine, settings) == 0  # failed rows are not claimed


async def test_backoff_delays_the_retry(dsn: str, db: psycopg.Connection[Any]) -> None:
    db.execute(
        "INSERT INTO actions (customer_id, event_id, action, event)"
        " VALUES ('acme', 'bad', 'x', '{\"event_id\": \"bad\", \"action\": \"nope\"}')"
    )
    db.execute("INSERT INTO scoring_queue (customer_id, event_id) VALUES ('acme', 'bad')")
    settings = Settings(backoff_base=60.0)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await score_claimed(conn, Engine.load(), settings) == 1
        assert await score_claimed(conn, Engine.load(), settings) == 0  # not before 60 s
    row = db.execute(
        "SELECT available_at > now() + interval '50 seconds' FROM scoring_queue"
    ).fetchone()
    assert row == (True,)
