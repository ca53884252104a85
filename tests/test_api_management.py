"""The management API against a real PostgreSQL: scoring keys, policy versions, the audit trail.

Every change a route makes is checked in the database together with its ``audit_log`` row; the
policy routes are also fed arbitrary text (hypothesis) and the new operations are run through
schemathesis like the rest of the API (tests/test_api_schema.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from api.actions import RateLimit, ScoringService, Settings
from api.app import create_app
from api.policies import MAX_BODY
from scripts.apikey import create_key, revoke_key
from tests.apiutil import AUTH, KEY, add_agent, live_server
from tests.test_api_schema import CHECKS

AGENT = "agt_0123456789abcdefghijklmnop"
GOOD = """\
version: 1
rules:
  - name: no-gpt3
    action: block
    when: [{field: model, op: eq, value: gpt-3.5-turbo}]
    message: retired model
  - name: tag-pii
    action: tag
    tag: pii
    when: [{field: pii_detected, op: eq, value: true}]
"""
# Line 4 is the bad action; the parser names it.
BAD = "version: 1\nrules:\n  - name: r\n    action: explode\n    when: []\n"
TEXT = {"Content-Type": "text/plain"}


def _scoring(cache_seconds: float) -> ScoringService:
    return ScoringService(
        Settings(
            rates={t: RateLimit(10_000, 20_000) for t in ("starter", "pro", "enterprise")},
            workers=1,
            poll_interval=0.05,
            key_cache_seconds=cache_seconds,
        )
    )


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient[Any]]:
    # A long key cache: revocation must not wait for it in the process that revokes.
    with TestClient(create_app(dsn, KEY, scoring=_scoring(60.0))) as c:
        c.headers.update(AUTH)
        yield c


def audit_rows(db: psycopg.Connection[Any], prefix: str = "") -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT who, action, target, before, after FROM audit_log"
        " WHERE starts_with(action, %s) ORDER BY id",
        (prefix,),
    ).fetchall()


# --- keys ----------------------------------------------------------------------------------------


def test_key_create_list_revoke_with_audit(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    r = client.post("/api/v1/keys", json={"customer_id": "acme", "tier": "pro"})
    assert r.status_code == 201, r.text
    made = r.json()
    key, key_id = made["key"], made["id"]
    assert key.startswith("sk-pro-") and len(key) == 47 and made["prefix"] == key[:12]
    assert (made["customer_id"], made["tier"], made["revoked_at"]) == ("acme", "pro", None)
    stored = db.execute("SELECT key_hash FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    assert stored is not None and bytes(stored[0]) == hashlib.sha256(key.encode()).digest()

    listed = client.get("/api/v1/keys")
    assert listed.status_code == 200 and listed.headers["x-total-count"] == "1"
    assert listed.json() == [{k: v for k, v in made.items() if k != "key"}]
    assert key not in listed.text and "hash" not in listed.text

    # The key works on a scoring route, and is cached there for 60 s...
    scores = "/scores/acme?limit=1"
    assert client.get(scores, headers={"X-API-Key": key}).status_code == 200
    # ...yet a revocation through the API is refused at once.
    r = client.delete(f"/api/v1/keys/{key_id}")
    assert r.status_code == 200, r.text
    revoked_at = r.json()["revoked_at"]
    assert revoked_at is not None
    assert client.get(scores, headers={"X-API-Key": key}).status_code == 401
    # Idempotent: the same answer, the first revocation time, no second audit row.
    again = client.delete(f"/api/v1/keys/{key_id}")
    assert again.status_code == 200 and again.json() == r.json()
    assert client.delete("/api/v1/keys/key_0000000000000000").status_code == 404
    assert client.get("/api/v1/keys", params={"revoked": "false"}).json() == []
    assert [k["id"] for k in client.get("/api/v1/keys", params={"customer_id": "acme"}).json()] == [
        key_id
    ]

    rows = audit_rows(db, "key.")
    assert [(w, a, t) for w, a, t, _, _ in rows] == [
        ("api", "key.create", f"key:{key_id}"),
        ("api", "key.revoke", f"key:{key_id}"),
    ]
    assert rows[0][3] is None
    assert rows[0][4] == {"id": key_id, "prefix": key[:12], "customer_id": "acme", "tier": "pro"}
    assert rows[1][3]["revoked_at"] is None and rows[1][4]["revoked_at"] is not None
    # Neither the key nor its digest is in the audit trail.
    dump = msgspec.json.encode([r[3:] for r in rows]).decode()
    assert key not in dump and hashlib.sha256(key.encode()).hexdigest() not in dump


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"customer_id": "event", "tier": "pro"}, 422, "customer_id"),
        ({"customer_id": "a/b", "tier": "pro"}, 422, "customer_id"),
        ({"customer_id": "acme", "tier": "gold"}, 400, "tier"),
        ({"customer_id": "acme"}, 400, "body"),
        ({"customer_id": "acme", "tier": "pro", "key": "sk-mine"}, 400, "key"),
    ],
)
def test_key_create_refuses_bad_bodies(
    client: TestClient[Any], db: psycopg.Connection[Any], body: Any, status: int, field: str
) -> None:
    r = client.post("/api/v1/keys", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert db.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
    assert audit_rows(db) == []


def test_cli_functions_are_the_routes_and_audit_as_cli(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    key_id, key = create_key(db, "globex", "starter")
    assert client.get("/scores/globex", headers={"X-API-Key": key}).status_code == 200
    assert [k["id"] for k in client.get("/api/v1/keys").json()] == [key_id]
    assert revoke_key(db, key_id) and not revoke_key(db, key_id)
    rows = audit_rows(db, "key.")
    assert [(w, a) for w, a, *_ in rows] == [("cli", "key.create"), ("cli", "key.revoke")]


# --- policies ------------------------------------------------------------------------------------


def test_validate_answers_rules_or_lines(client: TestClient[Any]) -> None:
    for headers, content in [
        (TEXT, GOOD),
        ({"Content-Type": "application/yaml; charset=utf-8"}, GOOD),
        ({"Content-Type": "application/json"}, msgspec.json.encode({"yaml": GOOD}).decode()),
    ]:
        r = client.post("/api/v1/policies/validate", content=content, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"valid": True, "rule_count": 2, "rules": ["no-gpt3", "tag-pii"]}

    r = client.post("/api/v1/policies/validate", content=BAD, headers=TEXT)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["valid"] is False and body["field"] == "yaml"
    assert body["errors"] == [
        {
            "line": 4,
            "message": "rule 'r': unknown action 'explode' (expected one of block, redact, tag, log)",
        }
    ]
    assert body["error"].startswith("invalid policy: policy:4: ")
    bad_yaml = client.post("/api/v1/policies/validate", content="rules:\n  - [\n", headers=TEXT)
    assert bad_yaml.status_code == 422 and bad_yaml.json()["errors"][0]["line"] == 3
    nul = client.post("/api/v1/policies/validate", content="a: 1\nb: \x00\n", headers=TEXT)
    assert nul.status_code == 422 and nul.json()["errors"][0]["line"] == 2
    # An empty policy is valid: no rules.
    empty = client.post("/api/v1/policies/validate", content="", headers=TEXT)
    assert empty.json() == {"valid": True, "rule_count": 0, "rules": []}


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, GOOD, 415),
        ({}, GOOD, 415),
        (TEXT, b"rules: \xff\n", 400),
        ({"Content-Type": "application/json"}, '{"yaml": 1}', 400),
        ({"Content-Type": "application/json"}, '{"text": "x"}', 400),
        ({"Content-Type": "application/json"}, "{", 400),
        (TEXT, "#" * (MAX_BODY + 1), 413),
    ],
)
def test_policy_bodies_we_cannot_read(
    client: TestClient[Any],
    db: psycopg.Connection[Any],
    headers: dict[str, str],
    content: str | bytes,
    status: int,
) -> None:
    for method in ("POST", "PUT"):
        path = "/api/v1/policies/validate" if method == "POST" else "/api/v1/policies"
        r = client.request(method, path, content=content, headers=headers)
        assert r.status_code == status, r.text
        assert r.json()["error"] and r.json()["field"] == "body"
    assert db.execute("SELECT count(*) FROM policy_versions").fetchone() == (0,)


def test_put_stores_versions_dedupes_and_audits(
    client: TestClient[Any], db: psycopg.Connection[Any], dsn: str
) -> None:
    assert client.get("/api/v1/policies").json() == {"active": None, "history": []}
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN govrix_policies")
        r = client.put("/api/v1/policies", content=GOOD, headers=TEXT)
        assert r.status_code == 201, r.text
        v1 = r.json()
        note = next(listener.notifies(timeout=5, stop_after=1))
        assert note.payload == str(v1["id"])
    assert v1["yaml"] == GOOD and v1["rule_count"] == 2
    assert (v1["who"], v1["source"]) == ("api", "api")
    assert v1["checksum"] == hashlib.sha256(GOOD.encode()).hexdigest()

    # The same text again: the active version, nothing stored, nothing audited.
    same = client.put(
        "/api/v1/policies",
        content=msgspec.json.encode({"yaml": GOOD}),
        headers={"Content-Type": "application/json"},
    )
    assert same.status_code == 200 and same.json() == v1
    # A text that does not compile: 422, nothing stored.
    assert client.put("/api/v1/policies", content=BAD, headers=TEXT).status_code == 422

    second = GOOD.replace("retired model", "gone")
    v2 = client.put("/api/v1/policies", content=second, headers=TEXT).json()
    assert v2["id"] > v1["id"]
    got = client.get("/api/v1/policies")
    assert got.headers["x-total-count"] == "2"
    assert got.json()["active"] == v2
    summary = {k: v for k, v in v1.items() if k != "yaml"}
    assert got.json()["history"] == [{k: v for k, v in v2.items() if k != "yaml"}, summary]
    assert client.get(f"/api/v1/policies/{v1['id']}").json() == v1
    missing = client.get("/api/v1/policies/999999")
    assert missing.status_code == 404 and missing.json() == {"error": "policy version not found"}
    # Rolling back is putting the old text again: a third version, history untouched.
    v3 = client.put("/api/v1/policies", content=GOOD, headers=TEXT)
    assert v3.status_code == 201 and v3.json()["checksum"] == v1["checksum"]

    rows = audit_rows(db, "policy.")
    assert [(w, a, t) for w, a, t, _, _ in rows] == [("api", "policy.put", "policy")] * 3
    assert rows[0][3] is None and rows[0][4] == {"id": v1["id"], "checksum": v1["checksum"]}
    assert rows[1][3] == {"id": v1["id"], "checksum": v1["checksum"]}
    assert rows[1][4] == {"id": v2["id"], "checksum": v2["checksum"]}
    assert "no-gpt3" not in msgspec.json.encode([r[3:] for r in rows]).decode()

    # History pages by cursor, newest first.
    page1 = client.get("/api/v1/policies", params={"limit": 2})
    ids = [v["id"] for v in page1.json()["history"]]
    page2 = client.get(
        "/api/v1/policies", params={"limit": 2, "cursor": page1.headers["x-next-cursor"]}
    )
    assert ids + [v["id"] for v in page2.json()["history"]] == [v3.json()["id"], v2["id"], v1["id"]]
    assert "x-next-cursor" not in page2.headers


def test_concurrent_identical_puts_make_one_version(dsn: str, db: psycopg.Connection[Any]) -> None:
    with (
        live_server(dsn, with_scoring=False) as srv,
        httpx.Client(base_url=srv.url, headers={**AUTH, **TEXT}, timeout=20) as http,
        ThreadPoolExecutor(8) as pool,
    ):
        statuses = sorted(
            pool.map(lambda _: http.put("/api/v1/policies", content=GOOD).status_code, range(8))
        )
    assert statuses == [200] * 7 + [201]
    assert db.execute("SELECT count(*) FROM policy_versions").fetchone() == (1,)
    assert len(audit_rows(db, "policy.")) == 1


_WORDS = st.sampled_from(
    ["version", "rules", "name", "action", "when", "conditions", "field", "op", "value", "tag",
     "message", "enabled", "block", "log", "model", "eq", "matches", "in", "1", "true", "[", "{",
     "&a", "*a", "- ", ": ", "\n", "  ", "'", "\\", "\x00", "\ud800", "2001-13-45", "!!python"]
)  # fmt: skip
_TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(_WORDS, max_size=40).map("".join),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10) | _WORDS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=4),
        max_leaves=20,
    ).map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
)


def test_arbitrary_text_never_gives_500(dsn: str) -> None:
    with TestClient(create_app(dsn, KEY, with_scoring=False)) as c:
        c.headers.update(AUTH)

        @given(text=_TEXTS, as_json=st.booleans())
        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        def run(text: str, as_json: bool) -> None:
            if as_json:
                # stdlib json: a lone surrogate goes out as a ``\\ud800`` escape, as a client's
                # JSON may carry it
                content = json.dumps({"yaml": text}).encode()
                headers = {"Content-Type": "application/json"}
            else:
                content = text.encode("utf-8", "surrogatepass")
                headers = TEXT
            v = c.post("/api/v1/policies/validate", content=content, headers=headers)
            p = c.put("/api/v1/policies", content=content, headers=headers)
            assert v.status_code in (200, 400, 422), v.text
            assert p.status_code in (200, 201, 400, 422), p.text
            # What validates is what PUT accepts, and the other way round.
            assert (v.status_code == 200) == (p.status_code in (200, 201)), (v.text, p.text)
            assert v.headers["content-type"].startswith("application/json")

        run()


# --- agents and the audit route ------------------------------------------------------------------


def test_agent_changes_are_audited_with_before_and_after(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    add_agent(db, AGENT, "billing")
    r = client.put(
        f"/api/v1/agents/{AGENT}", json={"status": "blocked", "metadata": {"reason": "leak"}}
    )
    assert r.status_code == 200, r.text
    assert client.post(f"/api/v1/agents/{AGENT}/retire").status_code == 200
    assert client.put("/api/v1/agents/agt_unknown", json={"status": "blocked"}).status_code == 404
    assert client.post("/api/v1/agents/agt_unknown/retire").status_code == 404
    rows = audit_rows(db, "agent.")
    assert [(w, a, t) for w, a, t, _, _ in rows] == [
        ("api", "agent.update", f"agent:{AGENT}"),
        ("api", "agent.retire", f"agent:{AGENT}"),
    ]
    (_, _, _, before, after), (_, _, _, before2, after2) = rows
    assert (before["status"], before["metadata"]) == ("active", {})
    assert (after["status"], after["metadata"]) == ("blocked", {"reason": "leak"})
    assert after == before2 and after2["status"] == "retired"
    assert after2["updated_at"] >= after["updated_at"]


def test_audit_route_filters_and_pages(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    add_agent(db, AGENT, "billing")
    key_ids = [
        client.post("/api/v1/keys", json={"customer_id": "acme", "tier": "starter"}).json()["id"]
        for _ in range(3)
    ]
    client.delete(f"/api/v1/keys/{key_ids[0]}")
    client.put(f"/api/v1/agents/{AGENT}", json={"status": "blocked"})
    client.put("/api/v1/policies", content=GOOD, headers=TEXT)
    client.post(
        "/api/v1/budgets", json={"scope": "global", "period": "daily", "metric": "usd", "limit": 5}
    )

    everything = client.get("/api/v1/audit", params={"limit": 1000})
    assert everything.status_code == 200 and everything.headers["x-total-count"] == "7"
    actions = [a["action"] for a in everything.json()]
    assert actions == [
        "budget.create", "policy.put", "agent.update", "key.revoke",
        "key.create", "key.create", "key.create",
    ]  # fmt: skip
    assert [a["id"] for a in everything.json()] == sorted(
        (a["id"] for a in everything.json()), reverse=True
    )

    keys_only = client.get("/api/v1/audit", params={"action": "key."})
    assert [a["action"] for a in keys_only.json()] == ["key.revoke"] + ["key.create"] * 3
    one = client.get("/api/v1/audit", params={"target": f"key:{key_ids[0]}"}).json()
    assert [a["action"] for a in one] == ["key.revoke", "key.create"]
    assert client.get("/api/v1/audit", params={"action": "%"}).json() == []  # not a LIKE pattern

    # Pages of 2 by cursor visit every row once, in order.
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = client.get("/api/v1/audit", params=params)
        assert page.status_code == 200, page.text
        seen += [a["id"] for a in page.json()]
        if "x-next-cursor" not in page.headers:
            break
        params["cursor"] = page.headers["x-next-cursor"]
    assert seen == [a["id"] for a in everything.json()]

    # since / until on the database clock.
    now = db.execute("SELECT now()").fetchone()
    assert now is not None
    later = (now[0] + timedelta(hours=1)).isoformat()
    earlier = (now[0] - timedelta(hours=1)).isoformat()
    assert client.get("/api/v1/audit", params={"since": later}).json() == []
    assert len(client.get("/api/v1/audit", params={"since": earlier, "until": later}).json()) == 7
    assert client.get("/api/v1/audit", params={"until": earlier}).json() == []
    naive = client.get(
        "/api/v1/audit", params={"since": datetime.now(UTC).replace(tzinfo=None).isoformat()}
    )
    assert naive.status_code == 400 and naive.json()["field"] == "since"
    bad = client.get("/api/v1/audit", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert bad.status_code == 400 and bad.json()["field"] == "cursor"


# --- the OpenAPI contract of the new operations --------------------------------------------------

MANAGEMENT = [
    "listKeys", "createKey", "revokeKey", "getPolicies", "getPolicyVersion", "validatePolicy",
    "putPolicy", "listAudit",
]  # fmt: skip


@pytest.fixture
def management_schema(dsn: str, db: psycopg.Connection[Any]) -> Iterator[Any]:
    add_agent(db, AGENT, "billing")
    with live_server(dsn, with_scoring=False) as srv:
        httpx.put(f"{srv.url}/api/v1/policies", content=GOOD, headers={**AUTH, **TEXT})
        httpx.post(
            f"{srv.url}/api/v1/keys", json={"customer_id": "acme", "tier": "pro"}, headers=AUTH
        )
        yield schemathesis.openapi.from_url(f"{srv.url}/schema/openapi.json")


def test_management_routes_conform_to_the_schema(management_schema: Any) -> None:
    ops = {
        o.definition.raw.get("operationId"): o
        for o in (r.ok() for r in management_schema.get_all_operations())
    }
    assert set(MANAGEMENT) <= set(ops)
    for operation_id in MANAGEMENT:

        @given(case=ops[operation_id].as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        run()


def test_management_routes_need_the_bearer_key(client: TestClient[Any]) -> None:
    for method, path in [
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/key_x"),
        ("GET", "/api/v1/policies"),
        ("PUT", "/api/v1/policies"),
        ("POST", "/api/v1/policies/validate"),
        ("GET", "/api/v1/audit"),
    ]:
        r = client.request(method, path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, (method, path)
