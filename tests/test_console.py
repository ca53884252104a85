"""The operator console (api/console/): login, sessions, CSRF, the kill switch through its forms,
the Overview's numbers (through /api/v1/stats), security headers, no external URL, SVG charts.

Against a real PostgreSQL through Litestar's TestClient (the console's in-process API calls run
inside the same app); the Live stream through a real uvicorn server (an endless SSE body).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from litestar.testing import TestClient

from addon.event import Event
from api.app import create_app
from api.console import svg
from api.console.auth import COOKIE, safe_next
from api.stats import REFUSAL_KINDS, bucket_origin
from scripts.fakedata import make_events
from tests.apiutil import AUTH, KEY, LiveServer, add_agent, write_events

AGENT = "agt_" + "a" * 26
OTHER = "agt_" + "b" * 26
NAV_PATHS = [
    "/",
    "/agents",
    "/sessions",
    "/explorer",
    "/live",
    "/risk",
    "/policies",
    "/budgets",
    "/keys",
    "/audit",
]


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(dsn, KEY)) as c:
        yield c


def login(c: TestClient[Any], key: str = KEY, next_url: str = "/") -> httpx.Response:
    return c.post("/login", data={"key": key, "next": next_url}, follow_redirects=False)


def csrf_of(page: str) -> str:
    m = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert m, "page has no CSRF field"
    return m.group(1)


def agent_row(db: psycopg.Connection[Any], agent_id: str) -> tuple[str, dict[str, Any]]:
    row = db.execute("SELECT status, metadata FROM agents WHERE id = %s", (agent_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


# -- login ---------------------------------------------------------------------------------------


def test_login_wrong_key_is_refused(client: TestClient[Any], db: psycopg.Connection[Any]) -> None:
    r = login(client, key="not-the-key")
    assert r.status_code == 401
    assert 'data-testid="login-error"' in r.text and "not the API key" in r.text
    assert COOKIE not in r.headers.get("set-cookie", "")
    assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (0,)
    r = login(client, key="")
    assert r.status_code == 400


def test_login_right_key_sets_a_strict_httponly_cookie(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    r = login(client, next_url="/agents?status=blocked")
    assert r.status_code == 303
    assert r.headers["location"] == "/agents?status=blocked"
    cookie = r.headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")}
    assert "httponly" in attrs and "path" in attrs and attrs["path"] == "Path=/"
    assert attrs["samesite"].lower() == "samesite=strict"
    assert "secure" not in attrs  # plain http: a Secure cookie would never come back
    token = cookie.split(";")[0].split("=", 1)[1]
    rows = db.execute(
        "SELECT token_hash, csrf, expires_at - created_at FROM console_sessions"
    ).fetchall()
    assert len(rows) == 1
    assert bytes(rows[0][0]) == hashlib.sha256(token.encode()).digest()  # never the token itself
    assert rows[0][1] and rows[0][1] != token
    assert timedelta(hours=11) < rows[0][2] <= timedelta(hours=12, seconds=5)
    assert client.get("/agents", follow_redirects=False).status_code == 200


def test_cookie_is_secure_over_https(dsn: str) -> None:
    with TestClient(create_app(dsn, KEY), base_url="https://console.local") as c:
        r = login(c)
        assert r.status_code == 303
        assert "secure" in [a.strip().lower() for a in r.headers["set-cookie"].split(";")]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/agents?status=blocked", "/agents?status=blocked"),
        ("/agents/agt_x", "/agents/agt_x"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("agents", "/"),
        ("/login", "/"),
        ("/logout", "/"),
        ("/a\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_next_is_only_a_relative_path(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected


def test_login_redirects_to_a_safe_next_only(client: TestClient[Any]) -> None:
    r = login(client, next_url="https://evil.example/")
    assert r.headers["location"] == "/"


# -- sessions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*NAV_PATHS, f"/agents/{AGENT}", "/live/stream"])
def test_pages_require_a_session(client: TestClient[Any], path: str) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303
    expected = "/login" if path == "/" else f"/login?next={path}"
    assert r.headers["location"] == expected


def test_a_forged_or_expired_cookie_is_no_session(
    client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    client.cookies.set(COOKIE, "forged")
    assert client.get("/agents", follow_redirects=False).status_code == 303
    client.cookies.clear()
    login(client)
    assert client.get("/agents", follow_redirects=False).status_code == 200
    db.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    r = client.get("/agents?status=active", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/agents%3Fstatus%3Dactive"


def test_the_json_api_does_not_accept_the_cookie(client: TestClient[Any]) -> None:
    login(client)
    assert client.get("/agents", follow_redirects=False).status_code == 200
    assert client.get("/api/v1/agents").status_code == 401
    assert client.get("/api/v1/agents", headers=AUTH).status_code == 200


def test_logout_deletes_the_session(client: TestClient[Any], db: psycopg.Connection[Any]) -> None:
    login(client)
    page = client.get("/agents").text
    r = client.post("/logout", data={"_csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert f"{COOKIE}=" in r.headers["set-cookie"]
    assert (
        "max-age=0" in r.headers["set-cookie"].lower()
        or "expires=" in r.headers["set-cookie"].lower()
    )
    assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (0,)
    client.cookies.clear()
    assert client.get("/agents", follow_redirects=False).status_code == 303


def test_logout_needs_the_csrf_token(client: TestClient[Any], db: psycopg.Connection[Any]) -> None:
    login(client)
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert db.execute("SELECT count(*) FROM console_sessions").fetchone() == (1,)


# -- the kill switch through the console ----------------------------------------------------------


@pytest.fixture
def agent(db: psycopg.Connection[Any]) -> str:
    add_agent(db, AGENT, "billing-agent")
    db.execute('UPDATE agents SET metadata = \'{"team": "billing"}\' WHERE id = %s', (AGENT,))
    return AGENT


def test_block_without_or_with_a_wrong_csrf_token_is_403_and_changes_nothing(
    client: TestClient[Any], db: psycopg.Connection[Any], agent: str
) -> None:
    login(client)
    page = client.get(f"/agents/{agent}").text
    assert csrf_of(page)
    before = agent_row(db, agent)
    for extra in ({}, {"_csrf": "wrong"}, {"_csrf": ""}):
        r = client.post(
            f"/agents/{agent}/block", data={"reason": "x", **extra}, follow_redirects=False
        )
        assert r.status_code == 403, extra
        assert "security token" in r.text
    r = client.post(
        f"/agents/{agent}/block",
        data={"reason": "x"},
        headers={"X-CSRF-Token": "wrong"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    for path in (f"/agents/{agent}/retire", f"/agents/{agent}/unblock"):
        assert client.post(path, follow_redirects=False).status_code == 403
    assert agent_row(db, agent) == before
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


def test_block_through_the_form_sets_status_and_reason(
    client: TestClient[Any], db: psycopg.Connection[Any], agent: str
) -> None:
    login(client)
    token = csrf_of(client.get(f"/agents/{agent}").text)
    r = client.post(
        f"/agents/{agent}/block",
        data={"reason": "leaking customer data", "_csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/agents/{agent}?done=blocked"
    status, metadata = agent_row(db, agent)
    assert status == "blocked"
    assert metadata == {"team": "billing", "reason": "leaking customer data"}  # others kept
    audit = db.execute(
        "SELECT who, action, target, before->>'status', after->>'status',"
        " after->'metadata'->>'reason' FROM audit_log"
    ).fetchall()
    assert audit == [
        ("api", "agent.update", f"agent:{agent}", "active", "blocked", "leaking customer data")
    ]
    page = client.get(r.headers["location"]).text
    assert 'data-testid="done"' in page and 'data-testid="unblock"' in page
    assert "leaking customer data" in page

    # The header htmx sends is accepted as well as the form field.
    r = client.post(
        f"/agents/{agent}/unblock", headers={"X-CSRF-Token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    assert agent_row(db, agent) == ("active", {"team": "billing"})

    r = client.post(f"/agents/{agent}/retire", data={"_csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    assert agent_row(db, agent)[0] == "retired"
    actions = [a for (a,) in db.execute("SELECT action FROM audit_log ORDER BY id").fetchall()]
    assert actions == ["agent.update", "agent.update", "agent.retire"]


def test_block_without_a_reason_shows_the_error_and_changes_nothing(
    client: TestClient[Any], db: psycopg.Connection[Any], agent: str
) -> None:
    login(client)
    token = csrf_of(client.get(f"/agents/{agent}").text)
    r = client.post(f"/agents/{agent}/block", data={"reason": "  ", "_csrf": token})
    assert r.status_code == 400
    assert 'data-testid="action-error"' in r.text and "reason" in r.text
    assert agent_row(db, agent) == ("active", {"team": "billing"})


def test_an_unknown_agent_is_a_404_page(client: TestClient[Any]) -> None:
    login(client)
    r = client.get(f"/agents/{OTHER}")
    assert r.status_code == 404
    assert "text/html" in r.headers["content-type"]
    assert "Agent not found" in r.text
    token = csrf_of(client.get("/agents").text)
    r = client.post(f"/agents/{OTHER}/block", data={"reason": "r", "_csrf": token})
    assert r.status_code == 404


# -- pages: content, headers, no external URL -------------------------------------------------------


@pytest.fixture
def recorded(dsn: str, db: psycopg.Connection[Any], tmp_path: Path) -> list[Event]:
    """Events of the last minutes, some refused (by kind), two agents registered."""
    evs = make_events(40, sessions=4, agents=2, start=datetime.now(UTC) - timedelta(minutes=10))
    codes = [c for kind in REFUSAL_KINDS.values() for c in kind] + ["governance_error"]
    requests = [i for i, e in enumerate(evs) if e.direction == "request"]
    for i, code in zip(requests, codes, strict=False):
        evs[i] = msgspec.structs.replace(evs[i], error=code, status_code=403)
    write_events(dsn, evs, tmp_path)
    add_agent(db, evs[0].agent_id, "billing-agent")
    add_agent(db, evs[1].agent_id, "support-agent")
    return evs


def test_overview_shows_the_windows_numbers(client: TestClient[Any], recorded: list[Event]) -> None:
    login(client)
    stats = client.get("/api/v1/stats/overview?window=1h", headers=AUTH).json()
    requests = [e for e in recorded if e.direction == "request"]
    responses = [e for e in recorded if e.direction == "response"]
    assert stats["calls"] == len(requests)
    assert stats["tokens"] == sum(e.total_tokens or 0 for e in responses)
    assert stats["cost_usd"] == pytest.approx(sum(e.cost_usd or 0 for e in responses))
    assert stats["pii_events"] == sum(e.pii_detected for e in recorded)
    by_code = [e.error for e in requests if e.error]
    assert stats["refusals"] == {
        "blocked": sum(c in REFUSAL_KINDS["blocked"] for c in by_code),
        "budget": sum(c in REFUSAL_KINDS["budget"] for c in by_code),
        "policy": sum(c in REFUSAL_KINDS["policy"] for c in by_code),
        "other": 1,
    }
    assert stats["refusals"]["blocked"] == 2 and stats["refusals"]["budget"] == 2
    agents = {u["key"]: u for u in stats["top_agents"]}
    for agent_id in {e.agent_id for e in recorded}:
        mine = [e for e in recorded if e.agent_id == agent_id]
        assert agents[agent_id]["calls"] == sum(e.direction == "request" for e in mine)
    assert {u["key"] for u in stats["models"]} == {e.model for e in recorded}
    # 5-minute buckets aligned to the clock, covering [from, to): 12 or 13 of them.
    assert stats["risk_bucket_seconds"] == 300
    starts = [datetime.fromisoformat(b["start"]) for b in stats["risk"]]
    start, end = datetime.fromisoformat(stats["from"]), datetime.fromisoformat(stats["to"])
    assert starts[0] <= start < starts[0] + timedelta(minutes=5)
    assert starts[-1] < end <= starts[-1] + timedelta(minutes=5)
    assert all(b - a == timedelta(minutes=5) for a, b in itertools.pairwise(starts))

    page = client.get("/?window=1h")
    assert page.status_code == 200
    assert (
        f'data-testid="metric-calls"><h2>Calls</h2><p class="value">{len(requests):,}' in page.text
    )
    assert 'data-testid="refusals-blocked">2<' in page.text
    assert 'aria-current="true">Last hour' in page.text
    assert "billing-agent" in page.text  # top agents by name
    assert client.get("/?window=7y").status_code == 400


def test_risk_over_time_and_top_risk_come_from_scores(
    client: TestClient[Any], db: psycopg.Connection[Any], recorded: list[Event]
) -> None:
    agent_id = recorded[0].agent_id
    now = datetime.now(UTC)
    for i, (level, ago) in enumerate([("high", 1), ("low", 2), ("high", 40), ("critical", 90)]):
        at = now - timedelta(minutes=ago)
        db.execute(
            "INSERT INTO actions (customer_id, event_id, agent_id, action, event)"
            " VALUES ('c', %s, %s, 'tool:x:call', '{}')",
            (f"e{i}", agent_id if level != "critical" else "agt_elsewhere"),
        )
        db.execute(
            "INSERT INTO scores (customer_id, event_id, score, risk_level, confidence, reasoning,"
            " scoring_source, scorer_version, scored_at) VALUES ('c', %s, 50, %s, 1, 'r', 'rules',"
            " 'v1', %s)",
            (f"e{i}", level, at),
        )
    stats = client.get("/api/v1/stats/overview?window=1h", headers=AUTH).json()
    counts = {lvl: sum(b[lvl] for b in stats["risk"]) for lvl in ("low", "high", "critical")}
    assert counts == {"low": 1, "high": 2, "critical": 0}  # 90 min ago is outside the hour
    origin = bucket_origin(now - timedelta(hours=1), timedelta(minutes=5))
    assert stats["risk"][0]["start"] == origin.isoformat().replace("+00:00", "Z")
    day = client.get("/api/v1/stats/overview?window=24h", headers=AUTH).json()
    assert sum(b["critical"] for b in day["risk"]) == 1
    mine = client.get(f"/api/v1/stats/agents?window=24h&agent_id={agent_id}", headers=AUTH).json()
    assert [a["top_risk"] for a in mine["agents"]] == ["high"]
    login(client)
    assert 'data-testid="risk-chart"' in client.get("/?window=1h").text


def test_agents_page_lists_status_today_and_budget_use(
    client: TestClient[Any], db: psycopg.Connection[Any], recorded: list[Event]
) -> None:
    agent_id = recorded[0].agent_id
    r = client.post(
        "/api/v1/budgets",
        headers=AUTH,
        json={"scope": "agent", "agent_id": agent_id, "period": "daily", "metric": "usd",
              "limit": 10},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    login(client)
    page = client.get("/agents").text
    rows = re.findall(r'data-testid="agent-row" data-agent-id="([^"]+)"', page)
    assert set(rows) == {recorded[0].agent_id, recorded[1].agent_id}
    assert "of $10.00 per day" in page
    mine = [e for e in recorded if e.agent_id == agent_id]
    detail = client.get(f"/agents/{agent_id}").text
    assert f"{sum(e.direction == 'request' for e in mine)} calls" in detail
    assert len(re.findall('data-testid="event-row"', detail)) == len(mine)
    assert 'data-testid="session-row"' in detail
    blocked = client.get("/agents?status=blocked").text
    assert 'data-testid="no-agents"' in blocked


_URL_ATTR = re.compile(r'(?:src|href|action|data-stream)="([^"]*)"')


def test_no_page_references_an_external_url(client: TestClient[Any], recorded: list[Event]) -> None:
    login(client)
    pages = [*NAV_PATHS, "/?window=30d", f"/agents/{recorded[0].agent_id}", "/login"]
    seen_static: set[str] = set()
    for path in pages:
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"
        assert "<script>" not in r.text and " style=" not in r.text and "<style" not in r.text
        for url in _URL_ATTR.findall(r.text):
            if url.startswith("http://www.w3.org/2000/svg"):
                continue
            assert url.startswith(("/", "#", "?")) and not url.startswith("//"), (path, url)
            if url.startswith("/static/"):
                seen_static.add(url)
        assert not re.search(r"(?:src|href|action)=\"(?:https?:)?//", r.text), path
    assert {"/static/console.css", "/static/vendor/htmx.min.js", "/static/live.js"} <= seen_static
    for url in seen_static:
        body = client.get(url)
        assert body.status_code == 200, url
        assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", body.text), url
        assert not re.search(r"(?:import|fetch|EventSource)\(\s*['\"](?:https?:)?//", body.text)


def test_vendored_htmx_matches_its_version_file() -> None:
    vendor = Path(__file__).parent.parent / "api" / "console" / "static" / "vendor"
    version = (vendor / "VERSION").read_text().split()[1]
    assert f'version:"{version}"' in (vendor / "htmx.min.js").read_text()
    assert "Zero-Clause BSD" in (vendor / "htmx.LICENSE").read_text()


def test_open_console_shows_a_banner_and_still_wants_the_csrf_token(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    add_agent(db, AGENT, "open-agent")
    with TestClient(create_app(dsn, None, insecure_no_auth=True)) as c:
        page = c.get(f"/agents/{AGENT}")
        assert page.status_code == 200 and 'data-testid="insecure-banner"' in page.text
        assert c.get("/login", follow_redirects=False).status_code == 303
        r = c.post(f"/agents/{AGENT}/block", data={"reason": "r"}, follow_redirects=False)
        assert r.status_code == 403
        assert agent_row(db, AGENT)[0] == "active"
        r = c.post(
            f"/agents/{AGENT}/block",
            data={"reason": "r", "_csrf": csrf_of(page.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert agent_row(db, AGENT) == ("blocked", {"reason": "r"})


def test_console_routes_stay_out_of_the_openapi_schema(client: TestClient[Any]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/api/v1/stats/overview" in paths
    assert not [p for p in paths if p in ("/", "/login", "/agents", "/live/stream")]


def test_the_scoring_routes_beside_the_console_are_untouched(client: TestClient[Any]) -> None:
    # POST /events is the scoring API's (X-API-Key), not a console page: no redirect to login.
    r = client.post("/events", json={}, follow_redirects=False)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/json")


# -- the Live stream ------------------------------------------------------------------------------


def test_live_stream_resumes_after_last_event_id(dsn: str, tmp_path: Path) -> None:
    evs = make_events(6, sessions=1, agents=1)
    write_events(dsn, evs, tmp_path)
    server = LiveServer(dsn).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.get("/live/stream", follow_redirects=False).status_code == 303
            r = c.post("/login", data={"key": KEY}, follow_redirects=False)
            assert r.status_code == 303
            ids: list[str] = []
            with c.stream("GET", "/live/stream", headers={"Last-Event-ID": evs[2].id}) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                for line in stream.iter_lines():
                    if line.startswith("id: "):
                        ids.append(line[4:])
                    if len(ids) == 3:
                        break
            assert ids == [e.id for e in evs[3:]]
    finally:
        server.stop()


# -- SVG -----------------------------------------------------------------------------------------

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20), (0.3, 0.5), (4100, 5000)],
)
def test_nice_max(value: float, top: float) -> None:
    assert svg.nice_max(value) == pytest.approx(top)


def test_stacked_bars_are_proportional_and_stacked_in_order() -> None:
    chart = svg.stacked_bars(
        [("10:00", {"low": 2}), ("11:00", {"low": 4, "high": 4}), ("12:00", {})],
        ("low", "high"),
        label="risk <by> level",
        width=240,
        height=120,
    )
    root = ET.fromstring(str(chart))
    assert root.get("aria-label") == "risk <by> level" and root.get("role") == "img"
    rects = root.findall(f"{SVG_NS}rect")
    assert [r.get("class") for r in rects] == ["s-low", "s-low", "s-high"]
    plot_h = 120 - 20 - 8
    heights = [float(r.get("height") or 0) for r in rects]
    assert heights == pytest.approx([plot_h * 2 / 10, plot_h * 4 / 10, plot_h * 4 / 10], abs=0.01)
    # The high segment sits on top of the low one of the same bar.
    low, high = rects[1], rects[2]
    assert float(high.get("y") or 0) + heights[2] == pytest.approx(
        float(low.get("y") or 0), abs=0.02
    )
    assert rects[0].findtext(f"{SVG_NS}title") == "10:00: low 2"
    assert "no data" not in str(chart)


def test_empty_chart_says_no_data() -> None:
    for bars in ([], [("a", {"low": 0})]):
        root = ET.fromstring(str(svg.stacked_bars(bars, ("low",), label="x")))
        assert root.findall(f"{SVG_NS}rect") == []
        assert "no data" in "".join(root.itertext())


@pytest.mark.parametrize(
    ("value", "limit", "state", "fill"),
    [
        (0, 10, "ok", 0),
        (5, 10, "ok", 50),
        (8, 10, "warn", 80),
        (12, 10, "over", 100),
        (1, 0, "over", 100),
    ],
)
def test_meter(value: float, limit: float, state: str, fill: float) -> None:
    root = ET.fromstring(str(svg.meter(value, limit, label="use")))
    assert f"meter-{state}" in (root.get("class") or "")
    assert float(root.findall(f"{SVG_NS}rect")[1].get("width") or 0) == pytest.approx(fill)
