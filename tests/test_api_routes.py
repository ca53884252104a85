"""Every REST route against a real PostgreSQL: happy paths, filters, limits, bad input, auth."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import TestClient

from addon.event import COLUMNS, Event
from api.app import create_app
from scripts.fakedata import make_events
from tests.apiutil import AUTH, KEY, add_agent, write_events

N = 60
NO_DB = "postgresql://govrix@127.0.0.1:1/nowhere?connect_timeout=1"
START = datetime(2026, 3, 5, 14, 20, tzinfo=UTC)


@pytest.fixture
def events(dsn: str, db: psycopg.Connection[Any], tmp_path: Path) -> list[Event]:
    evs = make_events(N, sessions=3, agents=2, start=START, step=timedelta(seconds=1))
    write_events(dsn, evs, tmp_path)
    add_agent(db, evs[0].agent_id, "billing-agent")
    add_agent(db, evs[1].agent_id, "support-agent", status="blocked")
    return evs


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(dsn, KEY)) as c:
        c.headers.update(AUTH)
        yield c


def newest_first(evs: list[Event]) -> list[str]:
    return [e.id for e in sorted(evs, key=lambda e: (e.timestamp, e.id), reverse=True)]


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# -- auth ---------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/evt_x"),
    ("GET", "/api/v1/events/sessions/ses_x"),
    ("GET", "/api/v1/events/stream"),
    ("GET", "/api/v1/agents"),
    ("GET", "/api/v1/agents/agt_x"),
    ("PUT", "/api/v1/agents/agt_x"),
    ("POST", "/api/v1/agents/agt_x/retire"),
    ("GET", "/api/v1/agents/agt_x/events"),
    ("GET", "/api/v1/sessions"),
    ("GET", "/api/v1/sessions/ses_x"),
    ("GET", "/api/v1/sessions/ses_x/verify"),
]
BAD_AUTH = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": KEY},
    {"Authorization": "Bearer "},
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", BAD_AUTH, ids=lambda h: repr(h.get("Authorization")))
def test_every_api_route_needs_the_key(method: str, path: str, headers: dict[str, str]) -> None:
    # The guard answers before any handler runs: no database is needed (none is reachable).
    with TestClient(create_app(NO_DB, KEY)) as c:
        r = c.request(method, path, headers=headers, json={"status": "blocked"})
    assert r.status_code == 401
    assert r.json() == {"error": "missing or invalid API key"}
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_right_key_passes_and_open_routes_need_none(client: TestClient[Any]) -> None:
    assert client.get("/api/v1/agents").status_code == 200
    for path in ("/health", "/ready", "/metrics", "/schema/openapi.json"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 200, path


def test_insecure_no_auth_serves_without_key(dsn: str) -> None:
    with TestClient(create_app(dsn, None, insecure_no_auth=True)) as c:
        assert c.get("/api/v1/events").status_code == 200


def test_no_key_refuses_to_build() -> None:
    with pytest.raises(ValueError, match="API key"):
        create_app("postgresql://127.0.0.1:1/x", None)
    with pytest.raises(ValueError, match="API key"):
        create_app("postgresql://127.0.0.1:1/x", "")


def test_cli_refuses_to_start_without_key(dsn: str) -> None:
    env = {"GOVRIX_DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"}
    p = subprocess.run(
        [sys.executable, "-m", "api", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert p.returncode == 2
    assert "GOVRIX_API_KEY" in p.stderr


# -- events list --------------------------------------------------------------------------------


def test_list_events_default_page(client: TestClient[Any], events: list[Event]) -> None:
    r = client.get("/api/v1/events")
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list)
    assert [e["id"] for e in body] == newest_first(events)[:50]
    assert r.headers["x-total-count"] == str(N)
    assert "x-next-cursor" in r.headers
    assert 'rel="next"' in r.headers["link"]


def test_event_json_has_every_column(client: TestClient[Any], events: list[Event]) -> None:
    ev = next(e for e in events if e.pii_detected and e.direction == "response")
    body = client.get(f"/api/v1/events/{ev.id}").json()
    expected = msgspec.to_builtins(ev)
    expected["timestamp"] = iso(ev.timestamp)
    assert set(body) == set(COLUMNS)
    assert body == expected
    assert body["timestamp"].endswith("Z")
    assert body["pii_types"] == ["email", "phone"]


def _expected(events: list[Event], **f: Any) -> list[str]:
    def keep(e: Event) -> bool:
        for k, v in f.items():
            if k == "from" and e.timestamp < v:
                return False
            if k == "to" and e.timestamp >= v:
                return False
            if k not in ("from", "to") and getattr(e, k) != v:
                return False
        return True

    return newest_first([e for e in events if keep(e)])


FILTERS: list[tuple[str, Any]] = [
    ("model", "gpt-4o"),
    ("provider", "openai"),
    ("direction", "response"),
    ("direction", "request"),
    ("compliance_tag", "pci"),
    ("pii_detected", True),
    ("pii_detected", False),
    ("from", START + timedelta(seconds=40)),
    ("to", START + timedelta(seconds=10)),
]


@pytest.mark.parametrize(("name", "value"), FILTERS, ids=[f"{n}={v}" for n, v in FILTERS])
def test_list_events_filters(
    client: TestClient[Any], events: list[Event], name: str, value: Any
) -> None:
    param = iso(value) if isinstance(value, datetime) else str(value).lower()
    r = client.get("/api/v1/events", params={name: param, "limit": 1000})
    assert r.status_code == 200, r.text
    want = _expected(events, **{name: value})
    assert 0 < len(want) < N
    assert [e["id"] for e in r.json()] == want
    assert r.headers["x-total-count"] == str(len(want))


def test_list_events_by_agent_session_and_combined(
    client: TestClient[Any], events: list[Event]
) -> None:
    agent, session = events[0].agent_id, events[1].session_id
    for params, want in [
        ({"agent_id": agent}, _expected(events, agent_id=agent)),
        ({"session_id": session}, _expected(events, session_id=session)),
        (
            {"agent_id": agent, "direction": "request", "from": iso(START + timedelta(seconds=5))},
            _expected(
                events,
                agent_id=agent,
                direction="request",
                **{"from": START + timedelta(seconds=5)},
            ),
        ),
        ({"agent_id": "agt_nobody"}, []),
    ]:
        r = client.get("/api/v1/events", params={**params, "limit": 1000})
        assert r.status_code == 200
        assert [e["id"] for e in r.json()] == want
        assert r.headers["x-total-count"] == str(len(want))


@pytest.mark.parametrize(
    ("limit", "status", "count"),
    [("1", 200, 1), ("50", 200, 50), ("1000", 200, N), ("0", 400, 0), ("1001", 400, 0),
     ("-1", 400, 0), ("ten", 400, 0)],
)  # fmt: skip
def test_list_events_limits(
    client: TestClient[Any], events: list[Event], limit: str, status: int, count: int
) -> None:
    r = client.get("/api/v1/events", params={"limit": limit})
    assert r.status_code == status
    if status == 200:
        assert len(r.json()) == count
    else:
        assert r.json()["field"] == "limit"
        assert "limit" in r.json()["error"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"direction": "sideways"}, "direction"),
        ({"pii_detected": "maybe"}, "pii_detected"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01T00:00:00Z"}, "to"),
        ({"from": "2026-03-05T14:20:00"}, "from"),  # no time zone
        ({"offset": "-3"}, "offset"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "MTIzfA"}, "cursor"),  # "123|": no id
        ({"provider": "open\x00ai"}, None),  # PostgreSQL refuses NUL in text: 400, not 500
        ({"agent_id": "\x00"}, None),
    ],
)
def test_list_events_bad_parameters(
    client: TestClient[Any], events: list[Event], params: dict[str, str], field: str | None
) -> None:
    r = client.get("/api/v1/events", params=params)
    assert r.status_code == 400
    assert r.json().get("field") == field
    assert set(r.json()) == ({"error", "field"} if field else {"error"})


def test_offset_paging(client: TestClient[Any], events: list[Event]) -> None:
    r = client.get("/api/v1/events", params={"limit": 10, "offset": 25})
    assert [e["id"] for e in r.json()] == newest_first(events)[25:35]
    assert client.get("/api/v1/events", params={"offset": 5000}).json() == []


@pytest.mark.parametrize("filters", [{}, {"direction": "response"}, {"session_id": "FIRST"}])
def test_cursor_walks_every_row_once(
    client: TestClient[Any], events: list[Event], filters: dict[str, str]
) -> None:
    if filters.get("session_id") == "FIRST":
        filters = {"session_id": events[0].session_id}
    seen: list[str] = []
    params: dict[str, Any] = {**filters, "limit": 7}
    pages = 0
    while True:
        r = client.get("/api/v1/events", params=params)
        assert r.status_code == 200
        seen += [e["id"] for e in r.json()]
        pages += 1
        if "x-next-cursor" not in r.headers:
            break
        assert f"cursor={r.headers['x-next-cursor']}" in r.headers["link"]
        params = {**filters, "limit": 7, "cursor": r.headers["x-next-cursor"]}
        assert pages < 100
    assert seen == _expected(events, **filters)


def test_cursor_and_offset_do_not_mix(client: TestClient[Any], events: list[Event]) -> None:
    cursor = client.get("/api/v1/events", params={"limit": 2}).headers["x-next-cursor"]
    r = client.get("/api/v1/events", params={"cursor": cursor, "offset": 3})
    assert r.status_code == 400
    assert r.json()["field"] == "offset"


def test_large_totals_are_cached_then_refreshed(
    dsn: str, events: list[Event], tmp_path: Path
) -> None:
    # Above ``count_exact_below`` the total is counted once, then refreshed in the background.
    app = create_app(dsn, KEY, count_exact_below=10, count_ttl=0.0)
    with TestClient(app) as c:
        c.headers.update(AUTH)
        assert c.get("/api/v1/events").headers["x-total-count"] == str(N)
        small = c.get("/api/v1/events", params={"session_id": "ses_none"})
        assert small.headers["x-total-count"] == "0"
        more = make_events(15, sessions=1, agents=1, start=START, seed=99)
        write_events(dsn, more, tmp_path / "more")
        seen = set()
        for _ in range(200):  # stale at first, then the refreshed count
            seen.add(c.get("/api/v1/events").headers["x-total-count"])
            if str(N + 15) in seen:
                break
        assert seen <= {str(N), str(N + 15)}
        assert str(N + 15) in seen


# -- one event, one session ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["evt_nope", "evt_01m8484g03vrq51f50pznjn5dk", "x" * 300, "%20"])
def test_get_event_not_found(client: TestClient[Any], events: list[Event], bad: str) -> None:
    r = client.get(f"/api/v1/events/{bad}")
    assert r.status_code == 404
    assert r.json() == {"error": "event not found"}


def test_stream_rejects_nul_before_streaming(client: TestClient[Any]) -> None:
    r = client.get("/api/v1/events/stream", params={"last_event_id": "evt_\x00"})
    assert r.status_code == 400
    assert r.json()["field"] == "last_event_id"


def test_nul_in_a_path_id_is_a_400(client: TestClient[Any], events: list[Event]) -> None:
    r = client.get("/api/v1/events/evt_%00")
    assert r.status_code == 400
    assert r.json()["error"].startswith("invalid input")


def test_session_events_ascending_and_paged(client: TestClient[Any], events: list[Event]) -> None:
    sid = events[2].session_id
    mine = sorted((e for e in events if e.session_id == sid), key=lambda e: (e.timestamp, e.id))
    r = client.get(f"/api/v1/events/sessions/{sid}")
    assert r.status_code == 200
    assert [e["id"] for e in r.json()] == [e.id for e in mine]
    assert r.headers["x-total-count"] == str(len(mine))
    first = client.get(f"/api/v1/events/sessions/{sid}", params={"limit": 5})
    second = client.get(
        f"/api/v1/events/sessions/{sid}",
        params={"limit": 5, "cursor": first.headers["x-next-cursor"]},
    )
    assert [e["id"] for e in first.json() + second.json()] == [e.id for e in mine[:10]]
    for bad in ("0", "1001"):
        r = client.get(f"/api/v1/events/sessions/{sid}", params={"limit": bad})
        assert r.status_code == 400
        assert r.json()["field"] == "limit"


def test_session_events_unknown_session(client: TestClient[Any], events: list[Event]) -> None:
    r = client.get("/api/v1/events/sessions/ses_nope")
    assert r.status_code == 404
    assert r.json() == {"error": "session not found"}


# -- agents ------------------------------------------------------------------------------------


def test_list_and_get_agents(client: TestClient[Any], events: list[Event]) -> None:
    r = client.get("/api/v1/agents")
    assert r.status_code == 200
    assert r.headers["x-total-count"] == "2"
    body = r.json()
    assert [a["name"] for a in body] == ["billing-agent", "support-agent"]
    assert set(body[0]) >= {
        "id", "name", "source_ip", "status", "metadata", "created_at", "updated_at"
    }  # fmt: skip
    assert body[0]["metadata"] == {}
    assert body[0]["created_at"].endswith("Z")
    blocked = client.get("/api/v1/agents", params={"status": "blocked"}).json()
    assert [a["name"] for a in blocked] == ["support-agent"]
    assert client.get("/api/v1/agents", params={"limit": 1}).json() == body[:1]
    assert client.get("/api/v1/agents", params={"offset": 1}).json() == body[1:]
    for params in ({"status": "dead"}, {"limit": "0"}, {"limit": "1001"}):
        assert client.get("/api/v1/agents", params=params).status_code == 400
    one = client.get(f"/api/v1/agents/{events[0].agent_id}")
    assert one.status_code == 200
    assert one.json() == body[0]
    missing = client.get("/api/v1/agents/agt_nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "agent not found"}


@pytest.mark.parametrize(
    ("body", "status", "metadata"),
    [
        ({"status": "blocked"}, "blocked", {}),
        ({"status": "retired"}, "retired", {}),
        ({"status": "active"}, "active", {}),
        ({"metadata": {"team": "cx"}}, "active", {"team": "cx"}),
        (
            {"status": "blocked", "metadata": {"reason": "unexpected PII exfiltration"}},
            "blocked",
            {"reason": "unexpected PII exfiltration"},
        ),
    ],
)
def test_put_agent(
    client: TestClient[Any],
    events: list[Event],
    db: psycopg.Connection[Any],
    body: dict[str, Any],
    status: str,
    metadata: dict[str, Any],
) -> None:
    aid = events[0].agent_id
    before = client.get(f"/api/v1/agents/{aid}").json()
    db.execute("LISTEN govrix_agents")
    r = client.put(f"/api/v1/agents/{aid}", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["status"] == status
    assert got["metadata"] == metadata
    assert got["updated_at"] > before["updated_at"]
    assert got["created_at"] == before["created_at"]
    assert client.get(f"/api/v1/agents/{aid}").json() == got
    # The change is announced to every proxy by the trigger (status changes and metadata ones).
    if got["status"] != before["status"] or got["metadata"] != before["metadata"]:
        notes = list(db.notifies(timeout=5, stop_after=1))
        assert notes
        assert msgspec.json.decode(notes[0].payload)["id"] == aid
        assert msgspec.json.decode(notes[0].payload)["status"] == status


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"status": "paused"}', "status"),
        (b'{"status": "BLOCKED"}', "status"),
        (b'{"status": 1}', "status"),
        (b'{"status": null}', "status"),
        (b'{"metadata": [1, 2]}', "metadata"),
        (b'{"metadata": "x"}', "metadata"),
        (b'{"metadata": null}', "metadata"),
        (b'{"name": "renamed"}', "name"),
        (b"{}", "status"),
        (b"[]", "body"),
        (b'"blocked"', "body"),
        (b"{not json", "body"),
        (b"", "body"),
    ],
)
def test_put_agent_rejects(
    client: TestClient[Any], events: list[Event], content: bytes, field: str
) -> None:
    aid = events[0].agent_id
    r = client.put(
        f"/api/v1/agents/{aid}", content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert client.get(f"/api/v1/agents/{aid}").json()["status"] == "active"


def test_put_unknown_agent(client: TestClient[Any], events: list[Event]) -> None:
    r = client.put("/api/v1/agents/agt_nope", json={"status": "blocked"})
    assert r.status_code == 404
    assert r.json() == {"error": "agent not found"}


def test_retire(client: TestClient[Any], events: list[Event]) -> None:
    aid = events[0].agent_id
    r = client.post(f"/api/v1/agents/{aid}/retire")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "status", "updated_at"}
    assert body["id"] == aid
    assert body["status"] == "retired"
    assert client.get(f"/api/v1/agents/{aid}").json()["status"] == "retired"
    r = client.post("/api/v1/agents/agt_nope/retire")
    assert r.status_code == 404
    assert r.json() == {"error": "agent not found"}


def test_agent_events(
    client: TestClient[Any], events: list[Event], db: psycopg.Connection[Any]
) -> None:
    aid = events[1].agent_id
    r = client.get(f"/api/v1/agents/{aid}/events", params={"limit": 1000})
    assert r.status_code == 200
    assert [e["id"] for e in r.json()] == _expected(events, agent_id=aid)
    page = client.get(f"/api/v1/agents/{aid}/events", params={"limit": 3})
    assert len(page.json()) == 3
    nxt = client.get(
        f"/api/v1/agents/{aid}/events", params={"limit": 3, "cursor": page.headers["x-next-cursor"]}
    )
    assert [e["id"] for e in page.json() + nxt.json()] == _expected(events, agent_id=aid)[:6]
    assert client.get(f"/api/v1/agents/{aid}/events", params={"limit": 0}).status_code == 400
    add_agent(db, "agt_quiet", "quiet")
    quiet = client.get("/api/v1/agents/agt_quiet/events")
    assert quiet.status_code == 200
    assert quiet.json() == []
    missing = client.get("/api/v1/agents/agt_nope/events")
    assert missing.status_code == 404
    assert missing.json() == {"error": "agent not found"}


# -- sessions and lineage ------------------------------------------------------------------------


def test_sessions(client: TestClient[Any], events: list[Event]) -> None:
    r = client.get("/api/v1/sessions")
    assert r.status_code == 200
    assert r.headers["x-total-count"] == "3"
    sid = events[0].session_id
    one = client.get(f"/api/v1/sessions/{sid}").json()
    assert one["event_count"] == N // 3
    assert one["head_seq"] == N // 3
    by_agent = client.get("/api/v1/sessions", params={"agent_id": events[0].agent_id}).json()
    assert {s["agent_id"] for s in by_agent} == {events[0].agent_id}
    assert client.get("/api/v1/sessions/ses_nope").json() == {"error": "session not found"}


def test_verify_valid_then_tampered(
    client: TestClient[Any], events: list[Event], db: psycopg.Connection[Any]
) -> None:
    sid = events[0].session_id
    r = client.get(f"/api/v1/sessions/{sid}/verify")
    assert r.status_code == 200
    assert r.json()["valid"] is True
    assert r.json()["events_checked"] == N // 3
    victim = [e for e in events if e.session_id == sid][4]
    db.execute("UPDATE events SET prompt_tokens = prompt_tokens + 1 WHERE id = %s", (victim.id,))
    bad = client.get(f"/api/v1/sessions/{sid}/verify").json()
    assert bad["valid"] is False
    assert bad["broken_event_id"] == victim.id
    assert bad["broken_seq"] == victim.seq
    assert "altered" in bad["reason"]
    # deleting the newest events leaves a chain that is valid in itself; the recorded head says no
    last = max((e for e in events if e.session_id == sid), key=lambda e: e.seq)
    db.execute("UPDATE events SET prompt_tokens = prompt_tokens - 1 WHERE id = %s", (victim.id,))
    db.execute("DELETE FROM events WHERE id = %s", (last.id,))
    cut = client.get(f"/api/v1/sessions/{sid}/verify").json()
    assert cut["valid"] is False and cut["broken_seq"] == last.seq and "deleted" in cut["reason"]
    missing = client.get("/api/v1/sessions/ses_nope/verify")
    assert missing.status_code == 404
    assert missing.json() == {"error": "session not found"}


# -- health, readiness, metrics, schema, errors ----------------------------------------------------


def test_health_ready_metrics_schema(client: TestClient[Any], events: list[Event]) -> None:
    assert client.get("/health").json() == {"status": "ok", "database": None}
    assert client.get("/ready").json() == {"status": "ok", "database": "ok"}
    client.get("/api/v1/events")
    text = client.get("/metrics").text
    assert 'govrix_api_requests_total{method="GET",route="/api/v1/events",status="200"}' in text
    schema = client.get("/schema/openapi.json").json()
    ops = {op["operationId"] for p in schema["paths"].values() for op in p.values()}
    assert {
        "listEvents", "getEvent", "listSessionEvents", "streamEvents", "listAgents", "getAgent",
        "updateAgent", "retireAgent", "listAgentEvents", "verifySession", "listSessions",
        "getSession", "health", "ready",
    } <= ops  # fmt: skip


def test_ready_is_503_while_the_database_is_away() -> None:
    app = create_app(NO_DB, KEY)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503
        assert r.json() == {"error": "database unreachable"}


def test_unknown_route_and_method_are_json(client: TestClient[Any]) -> None:
    r = client.get("/api/v1/nothing")
    assert r.status_code == 404
    assert r.json() == {"error": "not found"}
    r = client.delete("/api/v1/events")
    assert r.status_code == 405
    assert set(r.json()) == {"error"}
