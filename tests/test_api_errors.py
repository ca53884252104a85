"""One error mapping (api/errors.py) for both apps: the main API, which mounts the scoring routes,
and the scoring-only app answer every failure with the same ``{"error": ..., "field"?}`` body,
status and headers (seeds 000/001: ``{"error": "event not found"}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.actions import RateLimit, ScoringService, Settings
from api.actions.scoring_app import create_app as create_scoring_app
from api.app import create_app
from tests.actions_util import add_key, event
from tests.apiutil import KEY

NO_DB = "postgresql://govrix@127.0.0.1:1/nowhere?connect_timeout=1"
FAST = Settings(
    rates={t: RateLimit(10_000, 20_000) for t in ("starter", "pro", "enterprise")},
    workers=1,
    poll_interval=0.05,
    key_cache_seconds=0,
)
SLOW = Settings(
    rates={t: RateLimit(0.001, 1) for t in ("starter", "pro", "enterprise")},
    workers=1,
    poll_interval=0.05,
    key_cache_seconds=0,
)


def main_app(dsn: str, settings: Settings) -> Litestar:
    return create_app(dsn, KEY, scoring=ScoringService(settings))


APPS: dict[str, Callable[[str, Settings], Litestar]] = {
    "main": main_app,
    "scoring": create_scoring_app,
}

# (case, method, path, body, status, exact body or None, field)
CASES = [
    ("unknown route", "GET", "/nothing", None, 404, {"error": "not found"}, None),
    ("no key", "GET", "/scores/acme", None, 401, {"error": "missing X-API-Key header"}, None),
    ("wrong method", "DELETE", "/events/batch", None, 405, None, None),
    ("not JSON", "POST", "/events", b"{", 400, None, "body"),
    ("bad field", "POST", "/events", json.dumps(event("e1", action="nope")).encode(), 400, None,
     "action"),
    ("bad query", "GET", "/scores/acme?per_page=0", None, 400, None, "per_page"),
    ("bad batch item", "POST", "/events/batch",
     json.dumps({"events": [event("e1"), {"event_id": "e2"}]}).encode(), 400, None, "events[1].action"),
    ("other customer", "GET", "/scores/globex", None, 403, None, None),
    ("no score", "GET", "/scores/event/nope", None, 404, {"error": "score not found"}, None),
]  # fmt: skip


@pytest.fixture
def key(db: psycopg.Connection[Any]) -> str:
    return add_key(db, "acme")


@pytest.fixture(params=sorted(APPS))
def client(request: pytest.FixtureRequest, dsn: str) -> Iterator[TestClient[Any]]:
    with TestClient(APPS[request.param](dsn, FAST)) as c:
        yield c


def call(
    client: TestClient[Any], key: str | None, method: str, path: str, body: bytes | None
) -> httpx.Response:
    headers = {"X-API-Key": key} if key and not path.startswith("/nothing") else {}
    return client.request(method, path, content=body, headers=headers)


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status", "exact", "field"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_same_error_bodies_in_both_apps(
    client: TestClient[Any],
    key: str,
    case: str,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    exact: dict[str, str] | None,
    field: str | None,
) -> None:
    r = call(client, None if case == "no key" else key, method, path, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    out = r.json()
    assert set(out) <= {"error", "field"} and isinstance(out["error"], str) and out["error"]
    if exact is not None:
        assert out == exact
    assert out.get("field") == field


def test_both_apps_answer_alike(dsn: str, key: str) -> None:
    """Not only the shape: the very same bytes, case by case."""
    answers: dict[str, list[tuple[int, bytes]]] = {}
    for name, make in APPS.items():
        with TestClient(make(dsn, FAST)) as c:
            answers[name] = [
                (r.status_code, r.content)
                for case, method, path, body, *_ in CASES
                for r in [call(c, None if case == "no key" else key, method, path, body)]
            ]
    assert answers["main"] == answers["scoring"]


@pytest.mark.parametrize("app", sorted(APPS))
def test_rate_limit_carries_retry_after(dsn: str, key: str, app: str) -> None:
    with TestClient(APPS[app](dsn, SLOW)) as c:
        assert c.get("/scores/acme/summary", headers={"X-API-Key": key}).status_code == 200
        r = c.get("/scores/acme/summary", headers={"X-API-Key": key})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert set(r.json()) == {"error"} and "rate limit" in r.json()["error"]


def test_scoring_routes_503_while_the_database_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool that cannot connect is the 503 of every route, the scoring routes included."""
    monkeypatch.setattr("api.db.POOL_TIMEOUT", 0.3)
    with TestClient(main_app(NO_DB, FAST)) as c:
        r = c.get("/scores/acme", headers={"X-API-Key": "sk-ent-whatever"})
        assert (r.status_code, r.json()) == (503, {"error": "database unreachable"})
        r = c.get("/api/v1/events", headers={"Authorization": f"Bearer {KEY}"})
        assert (r.status_code, r.json()) == (503, {"error": "database unreachable"})
