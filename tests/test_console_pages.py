"""The console's Sessions, Events (``/explorer``) and Risk pages, and the operator's score routes
they read (``/api/v1/scores…``, api/actions/admin.py).

Real PostgreSQL: events through the real writer (chained), scores through ``POST /events`` (the
real engine) and one inline tool-call score as the proxy stores it. Pages through Litestar's
TestClient, logged in as test_console.py does.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import markupsafe
import msgspec
import psycopg
import pytest
from litestar.testing import TestClient

from addon.event import Event
from addon.lineage import Chain
from api.actions.scoring_app import create_app as scoring_only_app
from api.app import create_app
from scripts.fakedata import make_events
from tests.actions_util import add_key, event, full_event
from tests.apiutil import AUTH, KEY, add_agent, write_events
from tests.test_console import login

HOSTILE = '<script>alert("x")</script>'
HOSTILE_MODEL = "<img src=x onerror=alert(1)>"
EMAIL = "alice.secret@example.com"


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(dsn, KEY)) as c:
        yield c


def esc(text: str) -> str:
    """As the templates escape it (Jinja's autoescape)."""
    return str(markupsafe.escape(text))


def _unescaped(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def rows(page: str, testid: str, attr: str) -> list[str]:
    return re.findall(rf'data-testid="{testid}" {attr}="([^"]+)"', page)


# -- data ----------------------------------------------------------------------------------------


class Recorded(msgspec.Struct):
    main: list[Event]  # one session of 4 turns: request and response pairs, one refused call
    others: list[Event]  # 60 other sessions, older
    now: datetime

    @property
    def session(self) -> str:
        return self.main[0].session_id

    @property
    def agent(self) -> str:
        return self.main[0].agent_id

    @property
    def tool_event(self) -> Event:
        return self.main[3]


@pytest.fixture
def recorded(dsn: str, db: psycopg.Connection[Any], tmp_path: Path) -> Recorded:
    now = datetime.now(UTC)
    main = make_events(8, sessions=1, agents=1, start=now - timedelta(minutes=10), seed=5)
    main[0] = msgspec.structs.replace(
        main[0],
        pii_detected=True,
        pii_types=["email", "phone"],
        pii_findings=[
            {"type": "email", "count": 2, "path": "$.messages[0].content"},
            {"type": "phone", "count": 1, "path": "$.messages[1].content"},
        ],
        model=HOSTILE_MODEL,
    )
    main[3] = msgspec.structs.replace(
        main[3],
        status_code=200,
        tool_calls=[
            {
                "name": "send_mail",
                "id": "call_1",
                "arguments": f'{{"to": "{EMAIL}"}}',
                "action": "tool:send_mail:call",
                "score": 72,
                "risk_level": "high",
                "violations": ["external-send"],
            }
        ],
        policy_decisions=[{"phase": "response", "matched": ["tag-pci"], "tags": ["pci"]}],
    )
    # A refused call: the request event only (the proxy answered 403 itself).
    main[4] = msgspec.structs.replace(main[4], error="policy_blocked", status_code=403)
    del main[5]
    chain = Chain()
    main = [chain.seal(e) for e in main]
    others = make_events(
        120, sessions=60, agents=2, start=now - timedelta(minutes=30), seed=3, step=timedelta(0)
    )
    others = [msgspec.structs.replace(e, timestamp=e.timestamp + timedelta(microseconds=i))
              for i, e in enumerate(others)]  # fmt: skip
    chain = Chain()
    others = [chain.seal(e) for e in others]
    write_events(dsn, main + others, tmp_path)
    add_agent(db, main[0].agent_id, HOSTILE)
    return Recorded(main=main, others=others, now=now)


@pytest.fixture
def scored(client: TestClient[Any], db: psycopg.Connection[Any], recorded: Recorded) -> str:
    """Two actions scored by POST /events for customer acme, one tool call scored inline by the
    proxy (customer ``proxy``) for the main session's response event; returns acme's key."""
    key = add_key(db, "acme")
    h = {"X-API-Key": key}
    assert client.post("/events", json=full_event("act-1"), headers=h).status_code == 200
    r = client.post("/events", json=event("act-2", "db:customers:export"), headers=h)
    assert r.status_code == 200, r.text
    tool_id = f"{recorded.tool_event.id}:tool0"
    db.execute(
        "INSERT INTO actions (customer_id, event_id, agent_id, session_id, action, event)"
        " VALUES ('proxy', %s, %s, %s, 'tool:send_mail:call', '{}')",
        (tool_id, recorded.agent, recorded.session),
    )
    db.execute(
        "INSERT INTO scores (customer_id, event_id, score, risk_level, confidence, reasoning,"
        " violations, compliance_refs, mitigations, score_components, scoring_source,"
        " scorer_version) VALUES ('proxy', %s, 72, 'high', 0.9, %s, %s::jsonb, %s, %s,"
        " %s::jsonb, 'rules', 'v-test')",
        (
            tool_id,
            f"sends mail outside {HOSTILE}",
            msgspec.json.encode(
                [
                    {
                        "rule_id": "external-send",
                        "framework": "GDPR",
                        "ref": "GDPR:Art_32",
                        "severity": "high",
                        "explanation": "mail to an external domain",
                    }
                ]
            ).decode(),
            ["GDPR:Art_32", "SOC2:CC6.1"],
            ["require approval for external mail"],
            msgspec.json.encode(
                [
                    {"source": "intrinsic", "name": "verb_base", "value": 30, "detail": "send"},
                    {"source": "rule", "name": "external-send", "value": 42, "detail": "ext"},
                ]
            ).decode(),
        ),
    )
    return key


# -- auth ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/sessions", "/sessions/ses_x", "/explorer", "/explorer/evt_x", "/risk", "/risk/acme/e1"],
)
def test_pages_require_a_login(client: TestClient[Any], path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/login?next={quote(path, safe='/')}"


def test_operator_score_routes_take_the_bearer_key_only(
    client: TestClient[Any], scored: str
) -> None:
    for path in ("/api/v1/scores", "/api/v1/scores/customers", "/api/v1/scores/acme/act-1"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": scored}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers=AUTH).status_code == 200, path
    # The customer routes are unchanged: a key reads its own customer only.
    assert client.get("/scores/proxy", headers={"X-API-Key": scored}).status_code == 403
    assert client.get("/scores/proxy", headers=AUTH).status_code == 401


def test_operator_score_routes_read_every_customer(
    client: TestClient[Any], scored: str, recorded: Recorded
) -> None:
    r = client.get("/api/v1/scores", headers=AUTH)
    assert r.headers["x-total-count"] == "3"
    assert {(s["customer_id"], s["event_id"]) for s in r.json()} == {
        ("acme", "act-1"),
        ("acme", "act-2"),
        ("proxy", f"{recorded.tool_event.id}:tool0"),
    }
    mine = client.get("/api/v1/scores", params={"session_id": recorded.session}, headers=AUTH)
    assert [s["customer_id"] for s in mine.json()] == ["proxy"]
    assert (
        client.get("/api/v1/scores?customer_id=acme", headers=AUTH).headers["x-total-count"] == "2"
    )
    own = client.get("/scores/acme", headers={"X-API-Key": scored}).json()
    assert client.get("/api/v1/scores?customer_id=acme", headers=AUTH).json() == own
    summary = {
        c["customer_id"]: c for c in client.get("/api/v1/scores/customers", headers=AUTH).json()
    }
    acme = client.get("/scores/acme/summary", headers={"X-API-Key": scored}).json()
    assert {k: v for k, v in summary["acme"].items() if k != "last_scored_at"} == acme
    assert summary["proxy"]["total"] == 1 and summary["proxy"]["by_level"]["high"] == 1
    r = client.get("/api/v1/scores?from_date=2026-01-01T00:00:00", headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "from_date"
    assert client.get("/api/v1/scores/acme/nope", headers=AUTH).json() == {
        "error": "score not found"
    }


def test_the_scoring_only_app_has_no_operator_routes(dsn: str) -> None:
    paths = {r.path for r in scoring_only_app(dsn).routes}
    assert "/scores/{customer_id:str}" in paths
    assert not [p for p in paths if p.startswith("/api/v1")]


def test_an_open_console_reads_scores_too(dsn: str, db: psycopg.Connection[Any]) -> None:
    with TestClient(create_app(dsn, None, insecure_no_auth=True)) as c:
        assert c.get("/api/v1/scores").status_code == 200
        page = c.get("/risk")
        assert page.status_code == 200 and 'data-testid="no-scores"' in page.text


# -- Sessions ------------------------------------------------------------------------------------


def test_sessions_list_filters_and_pages(client: TestClient[Any], recorded: Recorded) -> None:
    login(client)
    page = client.get("/sessions").text
    listed = rows(page, "session-row", "data-session-id")
    assert len(listed) == 50
    assert listed[0] == recorded.session  # most recently active first
    assert f'href="/sessions/{recorded.session}"' in page
    assert "1\N{EN DASH}50 of 61" in page
    nxt = re.search(r'href="([^"]+)" rel="next" data-testid="next"', page)
    assert nxt
    second = client.get(html.unescape(nxt.group(1))).text
    assert len(rows(second, "session-row", "data-session-id")) == 11
    assert not set(listed) & set(rows(second, "session-row", "data-session-id"))
    assert 'data-testid="prev"' in second and 'data-testid="next"' not in second

    other_agent = recorded.others[1].agent_id
    mine = client.get("/sessions", params={"agent_id": other_agent}).text
    expected = {e.session_id for e in recorded.others if e.agent_id == other_agent}
    assert set(rows(mine, "session-row", "data-session-id")) == expected
    assert 'data-testid="no-sessions"' in client.get("/sessions?agent_id=agt_none").text


def test_session_page_shows_the_turns_in_order(
    client: TestClient[Any], recorded: Recorded, scored: str
) -> None:
    login(client)
    r = client.get(f"/sessions/{recorded.session}")
    assert r.status_code == 200
    page = r.text
    turns = re.findall(r'data-testid="turn-row" data-seq="(\d+)"', page)
    assert turns == ["1", "3", "5", "6"]  # each request with its response
    bodies = page.split('data-testid="turn-row"')[1:]
    first, second, third = bodies[0], bodies[1], bodies[2]
    # PII: types and counts, never a value or even its path.
    assert "email \N{MULTIPLICATION SIGN}2" in first and "phone \N{MULTIPLICATION SIGN}1" in first
    assert "$.messages" not in page
    # Tokens, cost and latency of the response, the model as escaped text.
    resp = recorded.main[1]
    assert f"{resp.prompt_tokens:,} / {resp.completion_tokens:,}" in first  # as reported
    assert f"{resp.latency_ms:.0f} ms" in first
    assert HOSTILE_MODEL not in page and esc(HOSTILE_MODEL) in first
    # Policy decisions and the scored tool call, linked to its stored score.
    assert "phase response · matched tag-pci · tags pci" in second
    assert "<code>send_mail</code>" in second and 'data-testid="risk">high<' in second
    tool_url = f"/risk/proxy/{quote(recorded.tool_event.id + ':tool0', safe='')}"
    assert f'href="{tool_url}" data-testid="tool-score-link"' in second
    assert EMAIL not in page  # the tool call's arguments are not shown
    assert "policy_blocked</span> 403" in third and third.count("turn-event-link") == 1
    assert f'href="/explorer/{recorded.main[4].id}"' in third
    # The agent's name, escaped.
    assert HOSTILE not in page and esc(HOSTILE) in page
    assert client.get("/sessions/ses_unknown").status_code == 404


def test_chain_badge_names_the_first_tampered_event(
    client: TestClient[Any], db: psycopg.Connection[Any], recorded: Recorded
) -> None:
    login(client)
    badge = re.compile(r'<p class="badge chain-\w+" data-testid="chain-badge"[^>]*>(.*?)</p>', re.S)
    page = client.get(f"/sessions/{recorded.session}").text
    m = badge.search(page)
    assert m and m.group(1) == "chain valid · 7 events checked"

    victim = recorded.main[4]
    db.execute("UPDATE events SET model = 'gpt-4o-tampered' WHERE id = %s", (victim.id,))
    page = client.get(f"/sessions/{recorded.session}").text
    m = badge.search(page)
    assert m
    text = _unescaped(m.group(1))
    assert re.sub(r"\s+", " ", text).startswith(f"chain broken at event {victim.id} (seq 5)")
    assert f'data-testid="broken-event-link"><code>{victim.id}</code>' in page
    # Another session is still intact.
    other = client.get(f"/sessions/{recorded.others[0].session_id}").text
    assert "chain valid" in other


# -- Events --------------------------------------------------------------------------------------


def test_explorer_pages_by_keyset_cursor(client: TestClient[Any], recorded: Recorded) -> None:
    login(client)
    everything = sorted(recorded.main + recorded.others, key=lambda e: (e.timestamp, e.id))[::-1]
    seen: list[str] = []
    url: str | None = "/explorer"
    pages = 0
    while url:
        page = client.get(url).text
        ids = rows(page, "event-row", "data-event-id")
        assert len(ids) <= 50
        seen += ids
        pages += 1
        m = re.search(r'href="([^"]+)" rel="next" data-testid="events-older"', page)
        url = html.unescape(m.group(1)) if m else None
        if url:
            assert "cursor=" in url
    assert pages == 3
    assert seen == [e.id for e in everything]
    assert 'Events <span class="muted">(127)' in client.get("/explorer").text


def test_explorer_filters(client: TestClient[Any], recorded: Recorded) -> None:
    login(client)
    sid = recorded.session
    page = client.get("/explorer", params={"session_id": sid}).text
    assert set(rows(page, "event-row", "data-event-id")) == {e.id for e in recorded.main}
    assert f'value="{sid}"' in page  # the form keeps what was asked
    page = client.get("/explorer", params={"session_id": sid, "direction": "request"}).text
    requests = [e.id for e in recorded.main if e.direction == "request"]
    assert rows(page, "event-row", "data-event-id") == requests[::-1]  # newest first
    assert '<option value="request" selected>' in page
    everything = recorded.main + recorded.others
    page = client.get("/explorer", params={"pii_detected": "true"}).text
    assert set(rows(page, "event-row", "data-event-id")) == {
        e.id for e in everything if e.pii_detected
    }
    model = recorded.others[0].model
    provider = recorded.others[0].provider
    if model and provider:
        page = client.get("/explorer", params={"model": model, "provider": provider}).text
        assert set(rows(page, "event-row", "data-event-id")) == {
            e.id for e in everything if e.model == model and e.provider == provider
        }
    # A time range typed as a datetime-local field (UTC, no zone).
    since = (recorded.now - timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%S")
    page = client.get("/explorer", params={"from": since}).text
    assert set(rows(page, "event-row", "data-event-id")) == {e.id for e in recorded.main}
    assert f'value="{since}"' in page
    until = recorded.main[2].timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f")
    page = client.get("/explorer", params={"from": since, "to": until + "Z"}).text
    assert set(rows(page, "event-row", "data-event-id")) == {
        e.id for e in recorded.main if e.timestamp < recorded.main[2].timestamp
    }
    bad = client.get("/explorer", params={"from": "yesterday", "agent_id": HOSTILE})
    assert bad.status_code == 200 and 'data-testid="filter-error"' in bad.text
    assert HOSTILE not in bad.text and esc(HOSTILE) in bad.text
    assert 'data-testid="no-events"' in client.get("/explorer?agent_id=agt_none").text
    # The form as a browser submits it untouched: every field present and empty.
    blank = (
        "agent_id=&session_id=&provider=&model=&direction=&compliance_tag=&pii_detected=&from=&to="
    )
    page = client.get(f"/explorer?{blank}").text
    assert len(rows(page, "event-row", "data-event-id")) == 50
    assert 'data-testid="filter-clear"' not in page


def test_event_page_shows_every_field(
    client: TestClient[Any], recorded: Recorded, scored: str
) -> None:
    login(client)
    ev = recorded.tool_event
    api_event = client.get(f"/api/v1/events/{ev.id}", headers=AUTH).json()
    page = client.get(f"/explorer/{ev.id}").text
    fields = re.findall(r'<dd data-testid="field-([a-z_]+)">', page)
    assert fields == list(api_event)  # every field, in the API's order
    assert f'href="/sessions/{ev.session_id}"' in page
    assert f'href="/explorer/{ev.parent_id}"' in page
    # JSON fields pretty-printed (and escaped); the tool call's arguments as a size only.
    pre = re.search(r'data-testid="field-tool_calls"><pre class="json">(.*?)</pre>', page, re.S)
    assert pre
    shown = msgspec.json.decode(html.unescape(pre.group(1)))
    assert shown[0]["name"] == "send_mail" and shown[0]["risk_level"] == "high"
    assert shown[0]["arguments"].endswith("bytes, not shown)")
    assert html.unescape(pre.group(1)).startswith('[\n  {\n    "id": "call_1",\n')
    assert EMAIL not in page
    assert f"<code>{api_event['lineage_hash']}</code>" in page
    # Its inline score, linked.
    assert f"/risk/proxy/{quote(ev.id + ':tool0', safe='')}" in page
    first = client.get(f"/explorer/{recorded.main[0].id}").text
    assert HOSTILE_MODEL not in first and esc(HOSTILE_MODEL) in first
    assert HOSTILE not in first
    pii = _unescaped(re.search(r'data-testid="field-pii_findings">(.*?)</dd>', first, re.S)[1])
    assert msgspec.json.decode(pii) == recorded.main[0].pii_findings
    r = client.get("/explorer/evt_unknown")
    assert r.status_code == 404 and "Event not found" in r.text


# -- Risk ----------------------------------------------------------------------------------------


def test_risk_page_lists_scores_and_the_summary_per_customer(
    client: TestClient[Any], recorded: Recorded, scored: str
) -> None:
    login(client)
    page = client.get("/risk").text
    assert set(rows(page, "score-row", "data-event-id")) == {
        "act-1",
        "act-2",
        f"{recorded.tool_event.id}:tool0",
    }
    assert rows(page, "customer-row", "data-customer-id") == ["acme", "proxy"]
    summary = client.get("/scores/acme/summary", headers={"X-API-Key": scored}).json()
    acme = page.split('data-customer-id="acme"')[1].split("</tr>")[0]
    assert f'<td class="n">{summary["total"]}</td>' in acme
    for level, n in summary["by_level"].items():
        assert f'data-testid="customer-{level}">{n}<' in acme
    assert HOSTILE not in page and esc(HOSTILE) in page  # the agent's name

    acme_only = client.get("/risk?customer_id=acme").text
    assert set(rows(acme_only, "score-row", "data-event-id")) == {"act-1", "act-2"}
    assert '<option value="acme" selected>' in acme_only
    high = client.get("/risk?risk_level=high&customer_id=proxy").text
    assert rows(high, "score-row", "data-event-id") == [f"{recorded.tool_event.id}:tool0"]
    by_agent = client.get("/risk", params={"agent_id": recorded.agent}).text
    assert rows(by_agent, "score-row", "data-event-id") == [f"{recorded.tool_event.id}:tool0"]
    later = (recorded.now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    empty = client.get("/risk", params={"from": later}).text
    assert 'data-testid="no-scores"' in empty and 'data-testid="no-customers"' in empty
    second = client.get("/risk?offset=2").text
    assert len(rows(second, "score-row", "data-event-id")) == 1 and "3\N{EN DASH}3 of 3" in second
    blank = client.get("/risk?customer_id=&risk_level=&agent_id=&from=&to=").text
    assert len(rows(blank, "score-row", "data-event-id")) == 3
    bad = client.get("/risk?risk_level=severe")
    assert bad.status_code == 400


def test_action_page_explains_the_score(
    client: TestClient[Any], recorded: Recorded, scored: str
) -> None:
    login(client)
    tool_id = f"{recorded.tool_event.id}:tool0"
    page = client.get(f"/risk/proxy/{quote(tool_id, safe='')}").text
    assert 'data-testid="action-score">72 / 100' in page
    assert "<code>GDPR:Art_32</code>" in page and "<code>SOC2:CC6.1</code>" in page
    assert "require approval for external mail" in page
    assert page.count('data-testid="component-row"') == 2
    assert page.count('data-testid="violation-row"') == 1
    assert "mail to an external domain" in page
    assert HOSTILE not in page and esc(HOSTILE) in page  # reasoning and agent name
    assert f'href="/explorer/{recorded.tool_event.id}" data-testid="action-event"' in page
    assert f'href="/sessions/{recorded.session}"' in page

    # A score from the real engine: every component and violation it stored is on the page.
    detail = client.get("/api/v1/scores/acme/act-1", headers=AUTH).json()
    page = client.get("/risk/acme/act-1").text
    assert page.count('data-testid="component-row"') == len(detail["score_components"]) > 0
    for c in detail["score_components"]:
        assert f"<code>{esc(c['name'])}</code>" in page
    assert page.count('data-testid="violation-row"') == len(detail["violations"])
    for ref in detail["compliance_refs"]:
        assert f"<code>{esc(ref)}</code>" in page
    for m in detail["mitigations"]:
        assert esc(m) in page
    assert f'data-testid="action-score">{detail["score"]} / 100' in page
    assert client.get("/risk/acme/nope").status_code == 404
    assert client.get(f"/risk/acme/{quote(tool_id, safe='')}").status_code == 404


# -- every page: CSP-clean, no external URL, no PII value ------------------------------------------


def test_pages_are_csp_clean_and_show_no_pii_value(
    client: TestClient[Any], recorded: Recorded, scored: str
) -> None:
    login(client)
    paths = [
        "/sessions",
        f"/sessions/{recorded.session}",
        "/explorer",
        f"/explorer/{recorded.tool_event.id}",
        f"/explorer/{recorded.main[0].id}",
        "/risk",
        "/risk/acme/act-1",
        f"/risk/proxy/{quote(recorded.tool_event.id + ':tool0', safe='')}",
    ]
    for path in paths:
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert "<script>" not in r.text and " style=" not in r.text and "<style" not in r.text
        assert not re.search(r"(?:src|href|action)=\"(?:https?:)?//", r.text), path
        assert EMAIL not in r.text, path
        assert 'aria-current="page"' in r.text


def test_pages_without_scoring_routes_or_stored_events(
    dsn: str, db: psycopg.Connection[Any], recorded: Recorded
) -> None:
    # A session whose events retention has dropped: the row stays, nothing to verify.
    db.execute(
        "INSERT INTO sessions (id, agent_id, started_at, last_event_at, event_count, head_seq)"
        " VALUES ('ses_gone', %s, now() - interval '40 days', now() - interval '40 days', 4, 4)",
        (recorded.agent,),
    )
    with TestClient(create_app(dsn, KEY, with_scoring=False)) as c:
        login(c)
        page = c.get("/risk")
        assert page.status_code == 200 and 'data-testid="risk-error"' in page.text
        assert "does not serve the scoring routes" in page.text
        session = c.get(f"/sessions/{recorded.session}")
        assert session.status_code == 200 and "chain valid" in session.text
        assert 'data-testid="tool-score-link"' not in session.text  # no stored score to link
        gone = c.get("/sessions/ses_gone")
        assert gone.status_code == 200
        assert 'data-testid="chain-badge" role="status">no events to check<' in gone.text
        assert 'data-testid="no-turns"' in gone.text
        assert c.get(f"/explorer/{recorded.tool_event.id}").status_code == 200
