"""The scoring routes against a real PostgreSQL (DESIGN.md §8, seeds/003)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from api.actions import RateLimit, Settings
from api.actions.scoring_app import create_app
from scripts.apikey import create_key, list_keys, revoke_key
from tests.actions_util import add_key, event, full_event

FAST = Settings(
    rates={t: RateLimit(10_000, 20_000) for t in ("starter", "pro", "enterprise")},
    workers=2,
    poll_interval=0.05,
    key_cache_seconds=0,
)


@pytest.fixture
def keys(db: psycopg.Connection[Any]) -> dict[str, str]:
    """Keys of two customers, plus a revoked one of acme."""
    acme, globex = add_key(db, "acme"), add_key(db, "globex", "pro")
    revoked_id, revoked = create_key(db, "acme", "starter")
    assert revoke_key(db, revoked_id)
    return {"acme": acme, "globex": globex, "revoked": revoked}


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(dsn, FAST)) as c:
        yield c


def h(key: str | None) -> dict[str, str]:
    return {} if key is None else {"X-API-Key": key}


# --- POST /events table ---------------------------------------------------------------------

EVENT_CASES = [
    # (name, key, body, status, error field)
    ("happy", "acme", json.dumps(full_event("e1")), 200, None),
    ("minimal", "acme", json.dumps(event("e2")), 200, None),
    ("bad action", "acme", json.dumps(event("e3", action="github.read")), 400, "action"),
    ("two-part action", "acme", json.dumps(event("e3", action="mcp:github")), 400, "action"),
    (
        "bad sensitivity",
        "acme",
        json.dumps({**full_event("e4"), "target": {"sensitivity_level": 9}}),
        400,
        "target.sensitivity_level",
    ),
    ("missing event_id", "acme", json.dumps({"action": "a:b:c"}), 400, "event_id"),
    ("unknown field", "acme", json.dumps({**event("e5"), "colour": 1}), 400, "colour"),
    ("bad JSON", "acme", '{"event_id": "e6", ', 400, "body"),
    ("not an object", "acme", "[1, 2]", 400, "body"),
    (
        "NUL in a value",
        "acme",
        json.dumps({**event("e8"), "agent": {"agent_id": "a\u0000b"}}),
        400,
        "body",
    ),
    ("missing key", None, json.dumps(event("e7")), 401, None),
    ("wrong key", "sk-ent-nope", json.dumps(event("e7")), 401, None),
    ("revoked key", "revoked", json.dumps(event("e7")), 401, None),
]


@pytest.mark.parametrize(
    ("name", "key", "body", "status", "field"), EVENT_CASES, ids=[c[0] for c in EVENT_CASES]
)
def test_post_event(
    client: TestClient[Any],
    keys: dict[str, str],
    db: psycopg.Connection[Any],
    name: str,
    key: str | None,
    body: str,
    status: int,
    field: str | None,
) -> None:
    r = client.post("/events", content=body, headers=h(keys.get(key or "", key)))
    assert r.status_code == status, r.text
    out = r.json()
    if status == 200:
        assert out["status"] == "scored"
        assert 1 <= out["score"] <= 100
        assert out["risk_level"] in ("none", "low", "medium", "high", "critical")
        assert out["score_components"][0]["source"] == "intrinsic"
        assert out["scoring_source"] == "rules"
        stored = db.execute(
            "SELECT s.score, s.risk_level, a.action, a.event->>'event_id', a.customer_id"
            " FROM scores s JOIN actions a USING (customer_id, event_id) WHERE event_id = %s",
            (out["event_id"],),
        ).fetchall()
        assert stored == [
            (out["score"], out["risk_level"], json.loads(body)["action"], out["event_id"], "acme")
        ]
    else:
        assert isinstance(out["error"], str) and out["error"]
        assert out.get("field") == field
        assert db.execute("SELECT count(*) FROM actions").fetchone() == (0,)


def test_history_facts_come_from_the_database(
    client: TestClient[Any], keys: dict[str, str]
) -> None:
    """First use of a server is flagged once per agent and customer; the agent's recent actions
    (from the database, not the event) feed the sequence rules."""
    acme, globex = h(keys["acme"]), h(keys["globex"])

    def rules(body: dict[str, Any], headers: dict[str, str]) -> set[str]:
        r = client.post("/events", json=body, headers=headers)
        assert r.status_code == 200, r.text
        return {c["name"] for c in r.json()["score_components"]}

    assert "core.new_server" in rules(full_event("h1"), acme)
    assert "core.new_server" not in rules(full_event("h2"), acme)
    assert "core.new_server" in rules(full_event("h1"), globex)  # another customer's history

    send = {"action": "mcp:email:message.send", "agent": {"agent_id": "mailer"}}
    assert "core.prior_sensitive_read" not in rules({"event_id": "m1", **send}, acme)
    read = {"action": "db:customers:records.read", "agent": {"agent_id": "mailer"}}
    rules({"event_id": "m2", **read}, acme)
    assert "core.prior_sensitive_read" in rules({"event_id": "m3", **send}, acme)
    other = {**send, "agent": {"agent_id": "someone-else"}}
    assert "core.prior_sensitive_read" not in rules({"event_id": "m4", **other}, acme)


def test_idempotent_repeat_returns_the_stored_score(
    client: TestClient[Any], keys: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    first = client.post("/events", json=full_event("same"), headers=h(keys["acme"]))
    # Same id, different content: the stored score is the answer, nothing is re-scored.
    again = client.post(
        "/events",
        json={**full_event("same"), "action": "sys:db:drop.execute"},
        headers=h(keys["acme"]),
    )
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert db.execute("SELECT count(*) FROM scores").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM actions").fetchone() == (1,)


def test_concurrent_duplicates_never_fail(
    client: TestClient[Any], keys: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    def post(_: int) -> Any:
        return client.post("/events", json=full_event("race"), headers=h(keys["acme"]))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(16)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.text for r in answers}) == 1
    assert db.execute("SELECT count(*) FROM scores").fetchone() == (1,)


# --- batch ----------------------------------------------------------------------------------


def wait_scored(db: psycopg.Connection[Any], n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute("SELECT count(*) FROM scores").fetchone()
        if row and row[0] >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"not all {n} events were scored in time")


@pytest.mark.parametrize(
    ("size", "status"), [(0, 400), (1, 202), (1000, 202), (1001, 400)], ids=str
)
def test_batch_sizes(
    client: TestClient[Any],
    keys: dict[str, str],
    db: psycopg.Connection[Any],
    size: int,
    status: int,
) -> None:
    events = [full_event(f"b{i}", agent=f"agent-{i % 7}") for i in range(size)]
    r = client.post("/events/batch", json={"events": events}, headers=h(keys["acme"]))
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["field"] == "events"
        assert db.execute("SELECT count(*) FROM actions").fetchone() == (0,)
        return
    assert r.json() == {"event_ids": [e["event_id"] for e in events], "count": size}
    wait_scored(db, size)
    assert db.execute("SELECT count(*) FROM scoring_queue").fetchone() == (0,)
    # The background score equals what the synchronous route computes for the same event.
    one = client.get(f"/scores/event/{events[-1]['event_id']}", headers=h(keys["acme"])).json()
    assert one["event_id"] == events[-1]["event_id"] and one["customer_id"] == "acme"


BATCH_ERRORS = [
    (
        "bad action at 3",
        {"events": [event("a"), event("b"), event("c"), event("d", "x")]},
        "events[3].action",
    ),
    (
        "nested field",
        {"events": [{**full_event("a"), "target": {"sensitivity_level": -1}}]},
        "events[0].target.sensitivity_level",
    ),
    ("not an object", {"events": [event("a"), 5]}, "events[1]"),
    ("no events key", {"items": []}, "events"),
    ("events not a list", {"events": {}}, "events"),
]


@pytest.mark.parametrize(("name", "body", "field"), BATCH_ERRORS, ids=[c[0] for c in BATCH_ERRORS])
def test_batch_validation_names_the_index(
    client: TestClient[Any],
    keys: dict[str, str],
    db: psycopg.Connection[Any],
    name: str,
    body: dict[str, Any],
    field: str,
) -> None:
    r = client.post("/events/batch", json=body, headers=h(keys["acme"]))
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert db.execute("SELECT count(*) FROM actions").fetchone() == (0,)


def test_batch_bad_json_and_duplicates(
    client: TestClient[Any], keys: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    r = client.post("/events/batch", content=b'{"events": [', headers=h(keys["acme"]))
    assert r.status_code == 400 and r.json()["field"] == "body"
    # Duplicates inside a batch and across batches are queued (and scored) once.
    body = {"events": [event("d1"), event("d2"), event("d1")]}
    r = client.post("/events/batch", json=body, headers=h(keys["acme"]))
    assert r.status_code == 202 and r.json() == {"event_ids": ["d1", "d2"], "count": 2}
    client.post("/events/batch", json=body, headers=h(keys["acme"]))
    wait_scored(db, 2)
    time.sleep(0.2)
    assert db.execute("SELECT count(*) FROM scores").fetchone() == (2,)
    # A later single POST of a batch id answers the stored score.
    r = client.post("/events", json=event("d1"), headers=h(keys["acme"]))
    assert r.status_code == 200 and r.json()["event_id"] == "d1"


# --- scores API -----------------------------------------------------------------------------


@pytest.fixture
def scored(client: TestClient[Any], keys: dict[str, str]) -> list[dict[str, Any]]:
    """Ten acme events of varied risk, scored synchronously, and one globex event."""
    bodies = [event(f"s{i}", "mcp:files:doc.read") for i in range(5)] + [
        full_event(f"s{i}") for i in range(5, 8)
    ]
    bodies += [
        {
            **full_event(f"s{i}"),
            "action": "db:prod:users.delete",
            "target": {"resource_type": "db", "resource_id": "prod", "sensitivity_level": 4},
            "data_fields_accessed": ["ssn", "password", "credit_card_number"],
            "mcp_context": {"server_name": "x", "is_verified": False},
        }
        for i in range(8, 10)
    ]
    out = [client.post("/events", json=b, headers=h(keys["acme"])).json() for b in bodies]
    client.post("/events", json=event("g1"), headers=h(keys["globex"]))
    return out


def test_scores_paging_and_filters(
    client: TestClient[Any], keys: dict[str, str], scored: list[dict[str, Any]]
) -> None:
    acme = h(keys["acme"])
    r = client.get("/scores/acme", headers=acme)
    assert r.status_code == 200 and r.headers["x-total-count"] == "10"
    ids = [s["event_id"] for s in r.json()]
    assert sorted(ids) == sorted(s["event_id"] for s in scored)
    pages = [
        client.get(f"/scores/acme?per_page=4&page={p}", headers=acme).json() for p in (1, 2, 3)
    ]
    assert [len(p) for p in pages] == [4, 4, 2]
    assert [s["event_id"] for p in pages for s in p] == ids  # stable order, no overlap
    assert client.get("/scores/acme?page=4&per_page=4", headers=acme).json() == []

    levels = {s["risk_level"] for s in scored}
    assert len(levels) >= 2, levels
    for level in levels:
        r = client.get(f"/scores/acme?risk_level={level}", headers=acme)
        expected = sorted(s["event_id"] for s in scored if s["risk_level"] == level)
        assert sorted(s["event_id"] for s in r.json()) == expected
        assert r.headers["x-total-count"] == str(len(expected))
    assert client.get("/scores/acme?from_date=2999-01-01T00:00:00Z", headers=acme).json() == []
    r = client.get("/scores/acme?from_date=2000-01-01T00:00:00Z", headers=acme)
    assert r.headers["x-total-count"] == "10"

    detail = client.get("/scores/event/s9", headers=acme).json()
    assert detail["action"] == "db:prod:users.delete" and detail["violations"]
    assert {k: detail[k] for k in scored[9] if k != "status"} == {
        k: v for k, v in scored[9].items() if k != "status"
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("per_page=1001", "per_page"),
        ("per_page=0", "per_page"),
        ("page=0", "page"),
        ("risk_level=severe", "risk_level"),
        ("from_date=yesterday", "from_date"),
    ],
)
def test_scores_bad_query(
    client: TestClient[Any], keys: dict[str, str], query: str, field: str
) -> None:
    r = client.get(f"/scores/acme?{query}", headers=h(keys["acme"]))
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


def test_summary(
    client: TestClient[Any], keys: dict[str, str], scored: list[dict[str, Any]]
) -> None:
    r = client.get("/scores/acme/summary", headers=h(keys["acme"]))
    assert r.status_code == 200
    out = r.json()
    assert out["total"] == 10
    assert out["average"] == round(sum(s["score"] for s in scored) / 10, 2)
    for level in ("none", "low", "medium", "high", "critical"):
        assert out["by_level"][level] == sum(s["risk_level"] == level for s in scored)
    assert out["pending"] == out["failed"] == 0
    empty = client.get("/scores/globex/summary", headers=h(keys["globex"])).json()
    assert empty["total"] == 1


ACCESS_CASES = [
    ("other customer's list", "globex", "/scores/acme", 403),
    ("other customer's summary", "globex", "/scores/acme/summary", 403),
    ("other customer's event", "globex", "/scores/event/s1", 404),
    ("unknown event", "acme", "/scores/event/nope", 404),
    ("no key", None, "/scores/acme", 401),
    ("revoked key", "revoked", "/scores/acme", 401),
]


@pytest.mark.parametrize(
    ("name", "key", "path", "status"), ACCESS_CASES, ids=[c[0] for c in ACCESS_CASES]
)
def test_access(
    client: TestClient[Any],
    keys: dict[str, str],
    scored: list[dict[str, Any]],
    name: str,
    key: str | None,
    path: str,
    status: int,
) -> None:
    r = client.get(path, headers=h(keys[key] if key else None))
    assert r.status_code == status
    if status == 404:
        assert r.json() == {"error": "score not found"}
    else:
        assert r.json()["error"]


def test_apikey_cli_helpers(db: psycopg.Connection[Any]) -> None:
    key_id, key = create_key(db, "initech", "pro")
    assert key.startswith("sk-pro-")
    rows = list_keys(db, "initech")
    assert [(r[0], r[1], r[3]) for r in rows] == [(key_id, key[:12], "pro")]
    stored = db.execute("SELECT key_hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert stored is not None and key.encode() not in bytes(stored[0])
    assert revoke_key(db, key_id) and not revoke_key(db, key_id)
    with pytest.raises(ValueError, match="tier"):
        create_key(db, "initech", "gold")
    with pytest.raises(ValueError, match="customer"):
        create_key(db, "event", "pro")


def test_rate_vs_baseline_from_activity(
    client: TestClient[Any], keys: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """An agent that did 2 actions an hour for the past day and now does 12 in a minute spikes;
    an agent with no earlier activity has no baseline (no spike rule, whatever its rate)."""
    db.execute(
        "INSERT INTO agent_activity (customer_id, agent_id, minute, n)"
        " SELECT 'acme', 'steady', date_trunc('minute', now()) - h * interval '1 hour', 2"
        " FROM generate_series(2, 24) AS h"
    )

    def rules(i: int, agent: str) -> set[str]:
        body = {
            "event_id": f"{agent}{i}",
            "action": "db:orders:rows.read",
            "agent": {"agent_id": agent},
        }
        r = client.post("/events", json=body, headers=h(keys["acme"]))
        assert r.status_code == 200, r.text
        return {c["name"] for c in r.json()["score_components"]}

    assert "core.rate_spike" not in rules(0, "steady")  # 1 in the last hour vs 2/h
    fired = [rules(i, "steady") for i in range(1, 12)]
    assert "core.rate_spike" in fired[-1]  # 12 in the last hour vs 2/h: x6
    assert not any("core.rate_spike" in rules(i, "newcomer") for i in range(12))


def test_apikey_cli(dsn: str) -> None:
    """The CLI prints the key once on stdout; list shows prefixes; revoke by id."""
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scripts.apikey", "--database-url", dsn, *args],
            capture_output=True,
            text=True,
            check=False,
        )

    made = cli("create", "--customer", "acme", "--tier", "starter")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("sk-sta-") and len(key) == 47
    key_id = made.stderr.split()[1].rstrip(":")
    listed = cli("list", "--customer", "acme")
    assert key_id in listed.stdout and key[:12] in listed.stdout and key not in listed.stdout
    assert cli("revoke", key_id).returncode == 0
    assert "revoked" in cli("list").stdout
    assert cli("revoke", key_id).returncode == 1
    assert cli("create", "--customer", "event", "--tier", "pro").returncode == 2
