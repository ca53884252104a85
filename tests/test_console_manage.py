"""The console's management pages (api/console/manage.py): Policies (with hits per rule from
``GET /api/v1/stats/policies``), Budgets, Keys, Audit.

Against a real PostgreSQL through Litestar's TestClient, as tests/test_console.py: every change
goes through a console form (with its CSRF token) and is checked in the public routes and the
database; every page is checked with real rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import TestClient

from addon.event import Event
from api.app import create_app
from api.stats import _POLICY_HITS_Q
from scripts.fakedata import make_events
from tests.apiutil import AUTH, KEY, add_agent, write_events
from tests.test_console import csrf_of, login

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
  - name: log-all
    action: log
    when: []
  - name: never-hit
    action: redact
    when: [{field: model, op: eq, value: nothing}]
"""
# Line 4 is the bad action; the parser names it.
BAD = "version: 1\nrules:\n  - name: r\n    action: explode\n    when: []\n"
TEXT = {**AUTH, "Content-Type": "text/plain"}
HOSTILE = '<script>alert("x")</script>'
AGENT = "agt_" + "c" * 26


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient[Any]]:
    """As tests/test_console.py's: the app on this test's database."""
    with TestClient(create_app(dsn, KEY)) as c:
        yield c


def token(c: TestClient[Any], path: str = "/budgets") -> str:
    return csrf_of(c.get(path).text)


def count(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# -- auth and CSRF -------------------------------------------------------------------------------

GETS = ["/policies", "/policies/1", "/budgets", "/budgets/1", "/keys", "/audit"]
POSTS = ["/policies", "/budgets", "/budgets/1", "/budgets/1/delete", "/keys", "/keys/k/revoke"]


@pytest.mark.parametrize("path", GETS)
def test_pages_require_a_session(client: TestClient[Any], path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}"


@pytest.mark.parametrize("path", POSTS)
def test_changes_require_a_session(client: TestClient[Any], path: str) -> None:
    r = client.post(path, data={"yaml": GOOD, "op": "activate"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}"


def test_every_change_without_the_csrf_token_is_403_and_changes_nothing(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    budget = client.post(
        "/api/v1/budgets",
        headers=AUTH,
        json={"scope": "global", "period": "daily", "metric": "tokens", "limit": 100},
    ).json()
    key = client.post("/api/v1/keys", headers=AUTH, json={"customer_id": "c", "tier": "pro"}).json()
    login(client)
    before = {t: count(db, t) for t in ("policy_versions", "budgets", "api_keys", "audit_log")}
    budget_form = {"scope": "global", "period": "monthly", "metric": "tokens", "limit": "5"}
    posts: list[tuple[str, dict[str, str]]] = [
        ("/policies", {"yaml": GOOD, "op": "activate"}),
        ("/budgets", budget_form),
        (f"/budgets/{budget['id']}", budget_form),
        (f"/budgets/{budget['id']}/delete", {}),
        ("/keys", {"customer_id": "mallory", "tier": "pro"}),
        (f"/keys/{key['id']}/revoke", {}),
    ]
    for path, data in posts:
        for extra in ({}, {"_csrf": "wrong"}):
            r = client.post(path, data={**data, **extra}, follow_redirects=False)
            assert r.status_code == 403, (path, extra)
            assert "security token" in r.text
    assert {t: count(db, t) for t in before} == before
    assert client.get(f"/api/v1/budgets/{budget['id']}", headers=AUTH).json()["limit"] == 100
    assert client.get("/api/v1/keys?revoked=true", headers=AUTH).json() == []


# -- Policies ------------------------------------------------------------------------------------


def test_policies_page_without_any_version(client: TestClient[Any]) -> None:
    login(client)
    page = client.get("/policies")
    assert page.status_code == 200
    assert 'data-testid="no-policy"' in page.text and 'data-testid="policy-form"' in page.text
    assert 'data-testid="not-built"' not in page.text


def test_policies_page_shows_the_active_version_and_the_history(
    client: TestClient[Any],
) -> None:
    v1 = client.put("/api/v1/policies", content=BAD.replace("explode", "log"), headers=TEXT)
    v2 = client.put("/api/v1/policies", content=GOOD, headers=TEXT)
    assert v1.status_code == v2.status_code == 201
    active = v2.json()
    login(client)
    page = client.get("/policies").text
    assert f'data-testid="active-version"><a href="/policies/{active["id"]}">' in page
    assert f'data-testid="active-checksum">{active["checksum"]}<' in page
    assert 'data-testid="active-rules">4<' in page
    assert 'data-testid="active-source"><code>api<' in page
    assert "no-gpt3" in page and "when: [{field: model, op: eq, value: gpt-3.5-turbo}]" in page
    rows = re.findall(r'data-testid="history-row" data-version-id="(\d+)"', page)
    assert rows == [str(active["id"]), str(v1.json()["id"])]
    # The editor starts from the active text.
    assert re.search(r'data-testid="policy-yaml"[^>]*>version: 1\nrules:\n  - name: no-gpt3', page)

    old = client.get(f"/policies/{v1.json()['id']}")
    assert old.status_code == 200
    assert 'data-testid="version-yaml"' in old.text and "action: log" in old.text
    assert 'data-testid="version-active"' not in old.text
    assert f"/policies?edit={v1.json()['id']}" in old.text
    # Loading an old version into the editor (the way to roll back).
    edit = client.get(f"/policies?edit={v1.json()['id']}").text
    assert re.search(r'data-testid="policy-yaml"[^>]*>version: 1\nrules:\n  - name: r\n', edit)
    assert client.get("/policies/999").status_code == 404
    assert client.get("/policies?window=7y").status_code == 400


def test_validate_shows_the_error_with_its_line_and_stores_nothing(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    login(client)
    csrf = token(client, "/policies")
    r = client.post("/policies", data={"yaml": BAD, "op": "validate", "_csrf": csrf})
    assert r.status_code == 422
    assert 'data-testid="validate-errors"' in r.text
    assert 'Line <span data-testid="error-line">4</span>' in r.text
    assert "unknown action &#39;explode&#39;" in r.text
    assert re.search(r'data-testid="excerpt-line">   4 \|     action: explode<', r.text)
    # The text comes back as typed, and the error describes the textarea.
    assert re.search(r'aria-describedby="check-result">version: 1\nrules:\n  - name: r\n', r.text)

    r = client.post("/policies", data={"yaml": GOOD, "op": "validate", "_csrf": csrf})
    assert r.status_code == 200
    assert 'data-testid="validate-ok"' in r.text
    assert "4 rules (no-gpt3, tag-pii, log-all, never-hit)" in r.text
    bad_yaml = client.post("/policies", data={"yaml": "rules:\n  - [\n", "_csrf": csrf})
    assert bad_yaml.status_code == 422 and 'data-testid="error-line">3<' in bad_yaml.text
    assert count(db, "policy_versions") == 0 and count(db, "audit_log") == 0


def test_make_active_creates_a_version_and_the_page_shows_it(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    login(client)
    csrf = token(client, "/policies")
    r = client.post(
        "/policies", data={"yaml": GOOD, "op": "activate", "_csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/policies?done=activated"
    api = client.get("/api/v1/policies", headers=AUTH).json()
    assert api["active"]["yaml"] == GOOD and api["active"]["rule_count"] == 4
    assert len(api["history"]) == 1
    page = client.get(r.headers["location"]).text
    assert 'data-testid="done"' in page and "every proxy applies it" in page
    assert f'data-testid="active-version"><a href="/policies/{api["active"]["id"]}">' in page

    # The same text again stores nothing and says so.
    r = client.post(
        "/policies", data={"yaml": GOOD, "op": "activate", "_csrf": csrf}, follow_redirects=False
    )
    assert r.headers["location"] == "/policies?done=unchanged"
    assert count(db, "policy_versions") == 1
    # A text that does not compile is shown with its error, and nothing is stored.
    r = client.post("/policies", data={"yaml": BAD, "op": "activate", "_csrf": csrf})
    assert r.status_code == 422 and 'data-testid="error-line">4<' in r.text
    assert count(db, "policy_versions") == 1
    assert [a for (a,) in db.execute("SELECT action FROM audit_log").fetchall()] == ["policy.put"]
    # ?done= only shows fixed texts.
    assert HOSTILE not in client.get("/policies", params={"done": "<b>x</b>"}).text


def _decided(ev: Event, decisions: list[dict[str, Any]]) -> Event:
    return msgspec.structs.replace(ev, policy_decisions=decisions)


@pytest.fixture
def decided(dsn: str, client: TestClient[Any], tmp_path: Path) -> None:
    """The GOOD policy active, and events with its decisions: in the last hour and 2 hours ago.

    As the proxy records them: a response event repeats its call's request-pass decisions.
    """
    assert client.put("/api/v1/policies", content=GOOD, headers=TEXT).status_code == 201
    now = datetime.now(UTC)
    recent = make_events(8, sessions=1, agents=1, start=now - timedelta(minutes=5))
    older = make_events(2, sessions=1, agents=1, start=now - timedelta(hours=2), seed=8)
    blocked = {"phase": "request", "matched": ["no-gpt3", "log-all"], "block": "no-gpt3",
               "logs": ["log-all"]}  # fmt: skip
    logged = {"phase": "request", "matched": ["log-all"], "logs": ["log-all"]}
    tagged = {"phase": "response", "matched": ["tag-pii", "log-all"], "tags": ["pii"],
              "logs": ["log-all"]}  # fmt: skip
    old_rule = {"phase": "request", "matched": ["retired-rule"], "redact": True, "redacted": 2}
    evs = [
        _decided(recent[0], [blocked]),  # a refused call: its request event only
        _decided(recent[2], [logged]),
        _decided(recent[3], [logged, tagged]),  # the response repeats the request's decision
        _decided(recent[4], [{"phase": "request", "gate": "request", "error": "exception"}]),
        recent[5],
        _decided(recent[6], [old_rule]),
        _decided(recent[7], [old_rule]),  # the request's decision again: counted once
        _decided(older[0], [logged]),
        _decided(older[1], [logged]),  # its response event: the same decision, counted once
    ]
    write_events(dsn, evs, tmp_path)


def test_hit_counts_per_rule_by_window(client: TestClient[Any], decided: None) -> None:
    hour = client.get("/api/v1/stats/policies?window=1h", headers=AUTH)
    assert hour.status_code == 200, hour.text
    stats = hour.json()
    assert stats["window"] == "1h" and stats["policy_version"] is not None
    assert stats["decisions"] == 4
    assert stats["actions"] == {"block": 1, "redact": 1, "tag": 1, "log": 3}
    rules = {r["rule"]: r for r in stats["rules"]}
    assert [r["rule"] for r in stats["rules"]] == [
        "no-gpt3", "tag-pii", "log-all", "never-hit", "retired-rule",
    ]  # fmt: skip
    assert rules["no-gpt3"] == {"rule": "no-gpt3", "action": "block", "enabled": True, "hits": 1,
                                "request": 1, "response": 0, "blocked": 1}  # fmt: skip
    assert (rules["tag-pii"]["hits"], rules["tag-pii"]["response"]) == (1, 1)
    assert (rules["log-all"]["hits"], rules["log-all"]["request"]) == (3, 2)
    assert rules["log-all"]["blocked"] == 0
    assert rules["never-hit"]["hits"] == 0 and rules["never-hit"]["action"] == "redact"
    assert rules["retired-rule"]["action"] is None and rules["retired-rule"]["hits"] == 1
    day = client.get("/api/v1/stats/policies", headers=AUTH).json()
    assert day["window"] == "24h"
    assert {r["rule"]: r["hits"] for r in day["rules"]}["log-all"] == 4
    assert client.get("/api/v1/stats/policies?window=7y", headers=AUTH).status_code == 400

    login(client)
    page = client.get("/policies?window=1h").text
    assert 'aria-current="true">Last hour' in page
    assert 'data-testid="hits-decisions">4<' in page and 'data-testid="hits-block">1<' in page
    row = re.search(r'data-testid="hit-row" data-rule="log-all">(.*?)</tr>', page, re.S)
    assert row and 'data-testid="hit-count">3<' in row.group(1)
    assert 'data-testid="hit-action">log<' in row.group(1)
    old = re.search(r'data-rule="retired-rule">(.*?)</tr>', page, re.S)
    assert old and "not in the active version" in old.group(1)
    assert 'data-rule="log-all">' in client.get("/policies").text  # 24h by default
    assert re.search(
        r'data-rule="log-all">.*?data-testid="hit-count">4<', client.get("/policies").text, re.S
    )


def test_hit_count_query_is_bounded_by_the_window(
    client: TestClient[Any], db: psycopg.Connection[Any], decided: None
) -> None:
    now = datetime.now(UTC)
    plan = db.execute(
        b"EXPLAIN " + _POLICY_HITS_Q.as_bytes(db),
        {"from": now - timedelta(hours=1), "to": now},
    ).fetchall()
    text = "\n".join(r[0] for r in plan)
    # Only the window's partitions are read (the others are pruned by the "timestamp" bound), and
    # jsonb_array_elements runs only on rows that have decisions: a filter, or a scan of the
    # partial index of sql/009 (each partition's copy of it) whose predicate it is.
    used = re.findall(r"Index (?:Only )?Scan using (\S+)", text)
    partial = {
        r[0]
        for r in db.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)"
            " AND indexdef LIKE '%%WHERE (policy_decisions IS NOT NULL)%%'",
            (used,),
        ).fetchall()
    }
    assert "policy_decisions IS NOT NULL" in text or partial, text
    storage = db.execute("SELECT value FROM govrix_settings WHERE key = 'events_storage'")
    if storage.fetchone() == ("partitioned",):  # TimescaleDB names its chunks otherwise
        scanned = set(re.findall(r" on (events_\d+)", text))
        partitions = {
            r[0]
            for r in db.execute(
                "SELECT inhrelid::regclass::text FROM pg_inherits"
                " WHERE inhparent = 'events'::regclass"
            ).fetchall()
        }
        assert scanned and (scanned < partitions or len(partitions) == 1), text


# -- Budgets -------------------------------------------------------------------------------------


def _budgets(client: TestClient[Any]) -> list[dict[str, Any]]:
    r = client.get("/api/v1/budgets", headers=AUTH)
    assert r.status_code == 200
    items: list[dict[str, Any]] = r.json()
    return items


def test_budget_create_edit_delete_through_the_forms(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    add_agent(db, AGENT, "billing-agent")
    login(client)
    page = client.get("/budgets").text
    assert 'data-testid="no-budgets"' in page
    for field in ("scope", "agent", "period", "metric", "limit", "enabled"):
        assert re.search(rf'<label for="new-{field}">', page), field
        assert f'data-testid="new-{field}"' in page
    csrf = csrf_of(page)
    form = {"scope": "agent", "agent_id": AGENT, "period": "daily", "metric": "usd",
            "limit": "2.50", "enabled": "true", "_csrf": csrf}  # fmt: skip
    r = client.post("/budgets", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/budgets?done=created"
    [b] = _budgets(client)
    assert (b["scope"], b["agent_id"], b["period"], b["metric"], b["limit"], b["enabled"]) == (
        "agent", AGENT, "daily", "usd", 2.5, True,
    )  # fmt: skip
    page = client.get(r.headers["location"]).text
    assert 'data-testid="done"' in page
    row = re.search(rf'data-testid="budget-row" data-budget-id="{b["id"]}">(.*?)</tr>', page, re.S)
    assert row and "billing-agent" in row.group(1) and "$2.50" in row.group(1)
    assert 'class="meter meter-ok"' in row.group(1) and "$0.00 of $2.50 per day" in row.group(1)

    # The same budget again: the API's 409, shown with the form as typed.
    r = client.post("/budgets", data=form)
    assert r.status_code == 409 and 'data-testid="action-error"' in r.text
    assert "already exists" in r.text and 'value="2.50"' in r.text
    r = client.post("/budgets", data={**form, "limit": "lots"})
    assert r.status_code == 400 and "must be a number" in r.text
    assert 'id="new-limit"' in r.text and 'aria-invalid="true"' in r.text
    r = client.post("/budgets", data={**form, "scope": "global"})  # global with an agent: 422
    assert r.status_code == 422 and 'data-testid="action-error"' in r.text
    assert len(_budgets(client)) == 1

    edit = client.get(f"/budgets/{b['id']}")
    assert edit.status_code == 200 and 'data-testid="budget-edit-form"' in edit.text
    assert 'id="edit-limit" name="limit" value="2.5"' in edit.text
    # "enabled" absent: the checkbox was cleared.
    r = client.post(
        f"/budgets/{b['id']}",
        data={k: v for k, v in {**form, "metric": "tokens", "limit": "5000",
                                "period": "monthly"}.items() if k != "enabled"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/budgets?done=updated"
    [b2] = _budgets(client)
    assert (b2["metric"], b2["limit"], b2["period"], b2["enabled"]) == (
        "tokens", 5000, "monthly", False,
    )  # fmt: skip
    r = client.post(f"/budgets/{b['id']}", data={**form, "metric": "tokens", "limit": "1.5"})
    assert r.status_code == 422 and "whole number" in r.text
    assert _budgets(client)[0]["limit"] == 5000
    assert client.get("/budgets/999").status_code == 404

    r = client.post(f"/budgets/{b['id']}/delete", data={"_csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/budgets?done=deleted"
    assert _budgets(client) == []
    assert client.post(f"/budgets/{b['id']}/delete", data={"_csrf": csrf}).status_code == 404
    actions = [a for (a,) in db.execute("SELECT action FROM audit_log ORDER BY id").fetchall()]
    assert actions == ["budget.create", "budget.update", "budget.delete"]


# -- Keys ----------------------------------------------------------------------------------------


def test_key_is_shown_once_listed_by_prefix_and_revoked(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    login(client)
    page = client.get("/keys").text
    assert 'data-testid="no-keys"' in page and '<label for="key-customer">' in page
    csrf = csrf_of(page)
    r = client.post(
        "/keys", data={"customer_id": "acme", "tier": "pro", "_csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 201 and "location" not in r.headers
    m = re.search(r'data-testid="new-key" tabindex="0">(sk-pro-[0-9a-f]{40})<', r.text)
    assert m, r.text
    key = m.group(1)
    assert r.text.count(key) == 1
    [row] = client.get("/api/v1/keys", headers=AUTH).json()
    assert row["prefix"] == key[:12] and row["customer_id"] == "acme"
    # The key works on the scoring routes (it is the real one), and it is never shown again.
    assert db.execute("SELECT count(*) FROM api_keys WHERE prefix = %s", (key[:12],)).fetchone()
    for path in ("/keys", "/audit", "/keys?status=live", "/"):
        later = client.get(path).text
        assert key not in later and key[12:20] not in later, path
    listed = client.get("/keys").text
    assert f'data-testid="key-prefix">{key[:12]}…<' in listed
    assert 'data-testid="new-key"' not in listed
    assert f'data-testid="revoke-{row["id"]}"' in listed

    r = client.post(f"/keys/{row['id']}/revoke", data={"_csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/keys?done=revoked"
    [revoked] = client.get("/api/v1/keys", headers=AUTH).json()
    assert revoked["revoked_at"] is not None
    listed = client.get("/keys?status=revoked").text
    assert (
        'data-testid="key-revoked"' in listed and f'data-testid="revoke-{row["id"]}"' not in listed
    )
    assert 'data-testid="no-keys"' in client.get("/keys?status=live").text
    assert client.post("/keys/key_nope/revoke", data={"_csrf": csrf}).status_code == 404

    audit = client.get("/audit?action=key.").text
    assert re.findall(r'data-testid="audit-row-action"><code>([^<]+)<', audit) == [
        "key.revoke", "key.create",
    ]  # fmt: skip
    assert key not in audit and f"key:{row['id']}" in audit

    # The API's 422 for a customer id, shown on the page with what was typed.
    r = client.post("/keys", data={"customer_id": "event", "tier": "pro", "_csrf": csrf})
    assert r.status_code == 422 and 'data-testid="action-error"' in r.text
    assert 'id="key-customer" name="customer_id" value="event"' in r.text
    assert 'data-testid="new-key"' not in r.text
    assert count(db, "api_keys") == 1


# -- Audit ---------------------------------------------------------------------------------------


def test_audit_page_filters_and_pages(client: TestClient[Any], db: psycopg.Connection[Any]) -> None:
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for i in range(60):
        db.execute(
            "INSERT INTO audit_log (at, who, action, target, before, after)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                at + timedelta(minutes=i),
                "cli" if i % 2 else "api",
                "key.create" if i < 55 else "agent.update",
                f"key:k{i}" if i < 55 else f"agent:{AGENT}",
                None if i < 55 else '{"status": "active"}',
                f'{{"id": "k{i}"}}' if i < 55 else '{"status": "blocked"}',
            ),
        )
    login(client)
    page = client.get("/audit").text
    ids = re.findall(r'data-testid="audit-row" data-audit-id="(\d+)"', page)
    assert len(ids) == 50
    assert '<code>status</code>: <code class="before">&#34;active&#34;</code> → ' in page
    assert f'href="/agents/{AGENT}"' in page
    older = re.search(r'href="([^"]+)" rel="next" data-testid="audit-older"', page)
    assert older
    page2 = client.get(older.group(1).replace("&amp;", "&")).text
    ids2 = re.findall(r'data-testid="audit-row" data-audit-id="(\d+)"', page2)
    assert len(ids2) == 10 and not set(ids) & set(ids2)
    assert 'data-testid="audit-newest"' in page2 and 'data-testid="audit-older"' not in page2

    agent = client.get("/audit", params={"action": "agent."}).text
    assert len(re.findall('data-testid="audit-row"', agent)) == 5
    assert 'value="agent."' in agent
    one = client.get("/audit", params={"target": "key:k3"}).text
    assert len(re.findall('data-testid="audit-row"', one)) == 1
    since = client.get("/audit", params={"since": "2026-01-01T12:50"}).text
    assert len(re.findall('data-testid="audit-row"', since)) == 10
    window = client.get("/audit", params={"since": "2026-01-01T12:10", "until": "2026-01-01T12:20"})
    assert len(re.findall('data-testid="audit-row"', window.text)) == 10
    none = client.get("/audit", params={"action": "policy."}).text
    assert 'data-testid="no-audit"' in none
    bad = client.get("/audit", params={"since": "yesterday"})
    assert bad.status_code == 400 and "2026-12-02T14:05" in bad.text


# -- escaping ------------------------------------------------------------------------------------


def test_hostile_strings_are_escaped(
    client: TestClient[Any], db: psycopg.Connection[Any], dsn: str, tmp_path: Path
) -> None:
    add_agent(db, AGENT, HOSTILE)
    r = client.post(
        "/api/v1/budgets",
        headers=AUTH,
        json={"scope": "agent", "agent_id": AGENT, "period": "daily", "metric": "usd", "limit": 1},
    )
    assert r.status_code == 201
    rule = "<img src=x onerror=alert(1)>"
    text = (
        f"rules:\n  - name: '{rule}'\n    action: log\n    when: []\n    description: '{HOSTILE}'\n"
    )
    assert client.put("/api/v1/policies", content=text, headers=TEXT).status_code == 201
    ev = make_events(1, sessions=1, agents=1)[0]
    write_events(dsn, [_decided(ev, [{"phase": "request", "matched": [rule, HOSTILE]}])], tmp_path)
    db.execute(
        "INSERT INTO audit_log (who, action, target, before, after) VALUES (%s, %s, %s, %s, %s)",
        (
            HOSTILE,
            HOSTILE,
            f"agent:{HOSTILE}",
            None,
            msgspec.json.encode({HOSTILE: HOSTILE}).decode(),
        ),
    )
    login(client)
    csrf = token(client)
    pages = {
        "/budgets": client.get("/budgets").text,
        f"/budgets/{r.json()['id']}": client.get(f"/budgets/{r.json()['id']}").text,
        "/policies": client.get("/policies").text,
        "/audit": client.get("/audit").text,
        "validate": client.post(
            "/policies", data={"yaml": f"rules: [{HOSTILE}\n", "_csrf": csrf}
        ).text,
    }
    for name, page in pages.items():
        assert "<script>alert" not in page and "<img src=x" not in page, name
        assert "&lt;script&gt;" in page or "&lt;img" in page, name
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages["/policies"]
    assert f'href="/agents/agt_{"c" * 26}"' in pages["/budgets"]
    assert 'href="/agents/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E"' in pages["/audit"]
