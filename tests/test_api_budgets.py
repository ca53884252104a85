"""``/api/v1/budgets`` against a real PostgreSQL: CRUD, validation, usage, audit, NOTIFY."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from addon.budgets import Budgets, Cost, Denial, Reservation
from api.app import create_app
from tests.apiutil import AUTH, KEY
from tests.proxyharness import wait_for

AGENT = "agt_0123456789abcdefghijklmnop"


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(dsn, KEY, with_scoring=False)) as c:
        c.headers.update(AUTH)
        yield c


def create(client: TestClient[Any], **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/budgets", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def audit(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT who, action, target, before, after FROM audit_log ORDER BY id"
    ).fetchall()


def test_create_get_list_patch_delete_and_audit(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    b = create(client, scope="agent", agent_id=AGENT, period="daily", metric="tokens", limit=50_000)
    today = datetime.now(UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    assert b | {"id": 0, "created_at": "", "updated_at": ""} == {
        "id": 0,
        "scope": "agent",
        "agent_id": AGENT,
        "period": "daily",
        "metric": "tokens",
        "limit": 50_000,
        "enabled": True,
        "spent": 0,
        "reserved": 0,
        "leased": 0,
        "remaining": 50_000,
        "period_starts_at": (midnight - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "period_ends_at": midnight.isoformat().replace("+00:00", "Z"),
        "created_at": "",
        "updated_at": "",
    }
    g = create(client, scope="global", period="monthly", metric="usd", limit=12.345678)
    assert g["limit"] == 12.345678 and g["agent_id"] is None

    assert client.get(f"/api/v1/budgets/{b['id']}").json() == b
    listed = client.get("/api/v1/budgets")
    assert listed.headers["x-total-count"] == "2"
    assert [x["id"] for x in listed.json()] == [b["id"], g["id"]]
    assert [x["id"] for x in client.get("/api/v1/budgets", params={"scope": "global"}).json()] == [
        g["id"]
    ]
    assert [x["id"] for x in client.get("/api/v1/budgets", params={"agent_id": AGENT}).json()] == [
        b["id"]
    ]

    r = client.patch(f"/api/v1/budgets/{b['id']}", json={"limit": 10, "enabled": False})
    assert r.status_code == 200, r.text
    assert (r.json()["limit"], r.json()["enabled"], r.json()["remaining"]) == (10, False, 10)
    assert client.get("/api/v1/budgets", params={"enabled": "false"}).json()[0]["id"] == b["id"]

    assert client.delete(f"/api/v1/budgets/{b['id']}").status_code == 204
    assert client.get(f"/api/v1/budgets/{b['id']}").json() == {"error": "budget not found"}

    rows = audit(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("api", "budget.create", f"budget:{b['id']}"),
        ("api", "budget.create", f"budget:{g['id']}"),
        ("api", "budget.update", f"budget:{b['id']}"),
        ("api", "budget.delete", f"budget:{b['id']}"),
    ]
    assert rows[0][3] is None and rows[0][4]["limit"] == "50000.000000"
    assert rows[1][4]["limit"] == "12.345678"
    assert (rows[2][3]["limit"], rows[2][4]["limit"], rows[2][4]["enabled"]) == (
        "50000.000000",
        "10.000000",
        False,
    )
    assert rows[3][3]["id"] == b["id"] and rows[3][4] is None


def test_usage_spent_reserved_remaining(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    b = create(client, scope="agent", agent_id=AGENT, period="monthly", metric="usd", limit=10)
    start = datetime.now(UTC).date().replace(day=1)
    db.execute(
        "INSERT INTO budget_usage (usage_key, period, period_start, tokens, usd_micros) VALUES (%s, 'monthly', %s, 0, %s)",
        ("agent:" + AGENT, start, 2_500_000),
    )
    db.execute(
        "INSERT INTO budget_reservations (instance, usage_key, period, period_start, usd_micros) VALUES "
        "('p1', %s, 'monthly', %s, 1000000), ('p2', %s, 'monthly', %s, 500000), "
        "('gone', %s, 'monthly', %s, 7000000)",
        ("agent:" + AGENT, start) * 3,
    )
    db.execute(
        "UPDATE budget_reservations SET updated_at = now() - interval '1 minute' WHERE instance = 'gone'"
    )
    db.execute(
        "INSERT INTO budget_leases (instance, usage_key, period, period_start, usd_micros, expires_at) "
        "VALUES ('p1', %s, 'monthly', %s, 2000000, now() + interval '5 seconds'), "
        "('p2', %s, 'monthly', %s, 250000, now() + interval '5 seconds'), "
        "('gone', %s, 'monthly', %s, 9000000, now() - interval '1 second')",
        ("agent:" + AGENT, start) * 3,
    )
    got = client.get(f"/api/v1/budgets/{b['id']}").json()
    # leases are room the instances hold, not usage: remaining is unchanged by them
    assert (got["spent"], got["reserved"], got["leased"], got["remaining"]) == (2.5, 1.5, 2.25, 6.0)


BAD = [
    ({"scope": "agent", "period": "daily", "metric": "tokens", "limit": 1}, 422, "agent_id"),
    (
        {"scope": "global", "agent_id": AGENT, "period": "daily", "metric": "tokens", "limit": 1},
        422,
        "agent_id",
    ),
    ({"scope": "global", "period": "daily", "metric": "tokens", "limit": 1.5}, 422, "limit"),
    ({"scope": "global", "period": "daily", "metric": "usd", "limit": 0.0000001}, 422, "limit"),
    ({"scope": "global", "period": "daily", "metric": "usd", "limit": -1}, 422, "limit"),
    ({"scope": "global", "period": "daily", "metric": "usd", "limit": 1e300}, 422, "limit"),
    ({"scope": "global", "period": "weekly", "metric": "usd", "limit": 1}, 400, "period"),
    ({"scope": "global", "period": "daily", "metric": "euros", "limit": 1}, 400, "metric"),
    ({"scope": "global", "period": "daily", "metric": "usd"}, 400, "body"),  # names `limit`
    ({"scope": "global", "period": "daily", "metric": "usd", "limit": [1]}, 400, "limit"),
    (
        {"scope": "global", "period": "daily", "metric": "usd", "limit": 1, "colour": "red"},
        400,
        "colour",
    ),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD)
def test_bad_bodies_name_the_field(
    client: TestClient[Any], body: dict[str, Any], status: int, field: str
) -> None:
    r = client.post("/api/v1/budgets", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert "limit" in r.json()["error"] or field != "body"
    assert client.get("/api/v1/budgets").json() == []


def test_conflicts_and_missing(client: TestClient[Any]) -> None:
    body = {"scope": "agent", "agent_id": AGENT, "period": "daily", "metric": "tokens", "limit": 5}
    first = create(client, **body)
    r = client.post("/api/v1/budgets", json=body | {"limit": 6})
    assert r.status_code == 409 and "already exists" in r.json()["error"]
    other = create(client, **body | {"period": "monthly"})
    r = client.patch(f"/api/v1/budgets/{other['id']}", json={"period": "daily"})
    assert r.status_code == 409
    r = client.patch(f"/api/v1/budgets/{first['id']}", json={"scope": "global"})
    assert r.status_code == 200 and r.json()["agent_id"] is None  # narrowing to global drops it
    assert client.patch(f"/api/v1/budgets/{first['id']}", json={}).status_code == 400
    r = client.patch(f"/api/v1/budgets/{first['id']}", json={"metric": "tokens", "limit": 0.5})
    assert r.status_code == 422 and r.json()["field"] == "limit"
    for method in ("get", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {"limit": 1}} if method == "patch" else {}
        r = getattr(client, method)("/api/v1/budgets/999999", **kwargs)
        assert (r.status_code, r.json()) == (404, {"error": "budget not found"})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/budgets"),
        ("POST", "/api/v1/budgets"),
        ("GET", "/api/v1/budgets/1"),
        ("PATCH", "/api/v1/budgets/1"),
        ("DELETE", "/api/v1/budgets/1"),
    ],
)
def test_every_budget_route_needs_the_key(dsn: str, method: str, path: str) -> None:
    with TestClient(create_app(dsn, KEY, with_scoring=False)) as c:
        r = c.request(method, path, headers={"Authorization": "Bearer wrong"}, json={})
    assert r.status_code == 401 and "error" in r.json()


def test_openapi_documents_the_routes(client: TestClient[Any]) -> None:
    spec = client.get("/schema/openapi.json").json()
    ops = {
        op["operationId"]
        for path in spec["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert {"listBudgets", "createBudget", "getBudget", "updateBudget", "deleteBudget"} <= ops
    create_op = spec["paths"]["/api/v1/budgets"]["post"]
    assert {"201", "400", "401", "409", "422"} <= set(create_op["responses"])


def test_a_posted_budget_reaches_a_proxy_within_a_second(client: TestClient[Any], dsn: str) -> None:
    """The proxy side (addon.budgets, LISTEN govrix_budgets) applies an API change at once."""
    budgets = Budgets(dsn, reload_interval=60).start()
    try:
        assert budgets.wait_loaded(5)
        start = time.monotonic()
        b = create(
            client, scope="agent", agent_id=AGENT, period="daily", metric="tokens", limit=100
        )
        wait_for(lambda: budgets.applies(AGENT)[0], timeout=5, interval=0.005)
        assert time.monotonic() - start < 1.0
        res = budgets.reserve(AGENT, Cost(100))
        assert isinstance(res, Reservation)
        budgets.settle(res, 100, None)
        assert isinstance(budgets.reserve(AGENT, Cost(1)), Denial)

        start = time.monotonic()
        client.patch(f"/api/v1/budgets/{b['id']}", json={"limit": 1000})
        wait_for(
            lambda: isinstance(budgets.reserve(AGENT, Cost(1)), Reservation),
            timeout=5,
            interval=0.005,
        )
        assert time.monotonic() - start < 1.0
    finally:
        budgets.stop()
