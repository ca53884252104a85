"""The request pipeline at hook level: mitmproxy's ``taddons``/``tflow``, a list-backed recorder,
no mitmdump, no database (the model is mitmproxy's own test_blocklist.py).

Tables over identity precedence and every gate's refusal, then a property-based test: whatever
the body bytes, content-encoding, headers and host, a blocked agent is refused and exactly one
request event is produced.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addon import config as config_mod
from addon import ids
from addon.budgets import BudgetSpec
from addon.policy import PolicyStore, parse_policy
from addon.proxy import Govrix
from addon.wire import AgentSeen, Begin, End, Score, Settle, ToRecorder

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
MCP_CALL = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/hosts"}}}'


class ListRecorder:
    """Supervisor's interface, keeping every capture in a list."""

    mode = "list"
    inline = True
    backlog_bytes = 0
    database_url = None

    def __init__(self) -> None:
        self.sent: list[ToRecorder] = []

    def send(self, msg: ToRecorder) -> None:
        msgspec.msgpack.encode(msg)  # what the pipe would refuse, the test refuses too
        self.sent.append(msg)

    def close(self) -> None:
        pass

    def export_metrics(self) -> None:
        pass

    def begins(self) -> list[Begin]:
        return [m for m in self.sent if isinstance(m, Begin)]


def make_settings(tmp: Path, **env: str) -> config_mod.Settings:
    base = {"GOVRIX_HOME": str(tmp), "GOVRIX_PROXY_METRICS_PORT": "0"}
    return config_mod.load(env=base | env)


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("govrix")


def start(home: Path, *, policy: str | None = None, **env: str) -> tuple[Govrix, ListRecorder]:
    rec = ListRecorder()
    g = Govrix(make_settings(home, **env), recorder=rec)
    if policy is not None:
        g.policies = PolicyStore()
        g.policies.current = parse_policy(policy)
    g.start()
    return g, rec


@pytest.fixture
def tctx() -> Iterator[Any]:
    with taddons.context() as tctx:
        yield tctx


def proxy_auth(user: str, password: str = "x") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def flow(
    *,
    host: str = "api.openai.com",
    path: str = "/v1/chat/completions",
    body: bytes = CHAT,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    raw_headers: list[tuple[bytes, bytes]] | None = None,
) -> http.HTTPFlow:
    fields = [(b"content-type", b"application/json")]
    fields += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    fields += raw_headers or []
    req = tutils.treq(
        host=host,
        port=443,
        scheme=b"https",
        method=method.encode(),
        path=path.encode(),
        authority=b"",
        headers=http.Headers(fields),
        content=b"",
    )
    req.raw_content = body
    f = tflow.tflow(req=req)
    f.request.timestamp_start = 1_700_000_000.0
    return f


def block(g: Govrix, agent_name: str, status: str = "blocked") -> None:
    agent_id = ids.agent_id("name:" + agent_name)
    g.agents._apply(json.dumps({"op": "UPDATE", "id": agent_id, "status": status}))


def body(f: http.HTTPFlow) -> dict[str, Any]:
    assert f.response is not None
    return dict(json.loads(f.response.content or b"{}"))


# -- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "name", "kind"),
    [
        ({"proxy-authorization": proxy_auth("pa"), "x-govrix-agent": "hdr"}, "pa", "proxy_auth"),
        ({"x-govrix-agent": "hdr", "authorization": "Bearer sk-abc"}, "hdr", "header"),
        ({"x-agent-id": "alias", "authorization": "Bearer sk-abc"}, "alias", "header"),
        ({"authorization": "Bearer sk-abc"}, None, "api_key"),
        ({}, "127.0.0.1", "source_ip"),
    ],
)
def test_identity_precedence(
    tctx: Any, home: Path, headers: dict[str, str], name: str | None, kind: str
) -> None:
    g, rec = start(home)
    f = flow(headers=headers)
    g.request(f)
    (b,) = rec.begins()
    assert b.identity_kind == kind
    if name is not None:
        assert b.agent_name == name
    assert "sk-abc" not in b.agent_name
    assert not any(
        n.lower() in (b"proxy-authorization", b"x-agent-id") for n, _ in f.request.headers.fields
    )
    assert not any(n.lower().startswith(b"x-govrix") for n, _ in f.request.headers.fields)


def test_a_config_reloaded_while_running_routes_with_its_hosts(home: Path, tmp_path: Path) -> None:
    g, rec = start(home)
    cfg = tmp_path / "govrix.toml"
    cfg.write_text(f'home = "{home}"\n[openai_compatible_hosts]\n"llm.corp" = "corp"\n')
    with taddons.context(g) as tctx:
        tctx.configure(g, govrix_config=str(cfg))
    f = flow(host="llm.corp")
    g.request(f)
    (b,) = rec.begins()
    assert f.response is None  # forwarded, not refused by a router lost in the reload
    assert b.provider == "corp" and b.status_code is None


# -- the kill switch: every host, every method -----------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "payload", "method", "provider"),
    [
        ("api.openai.com", "/v1/chat/completions", CHAT, "POST", "openai"),
        ("api.anthropic.com", "/v1/messages", b"{}", "POST", "anthropic"),
        ("mcp.example.net", "/mcp", MCP_CALL, "POST", "mcp"),
        ("pastebin.example.com", "/upload", b"exfiltrated", "PUT", "other"),
        ("example.org", "/", b"", "GET", "other"),
    ],
)
@pytest.mark.parametrize("status", ["blocked", "retired"])
def test_kill_switch_applies_to_every_host(
    tctx: Any,
    home: Path,
    host: str,
    path: str,
    payload: bytes,
    method: str,
    provider: str,
    status: str,
) -> None:
    g, rec = start(home)
    block(g, "rogue", status)
    f = flow(host=host, path=path, body=payload, method=method, headers={"x-govrix-agent": "rogue"})
    g.request(f)
    assert f.response is not None
    (b,) = rec.begins()
    assert b.provider == provider and b.status_code == 403 and b.error == f"agent_{status}"
    assert b.host == host and b.method == method
    if provider == "mcp":  # a JSON-RPC error the client can hand to its model
        assert f.response.status_code == 200
        assert body(f)["error"]["data"]["error"] == f"agent_{status}"
    else:
        assert f.response.status_code == 403 and body(f)["error"] == f"agent_{status}"


def test_kill_switch_refuses_connect_of_a_named_agent(tctx: Any, home: Path) -> None:
    g, rec = start(home)
    block(g, "rogue")
    f = flow(
        host="api.openai.com",
        method="CONNECT",
        path="",
        body=b"",
        headers={"proxy-authorization": proxy_auth("rogue")},
    )
    g.http_connect(f)
    assert f.response is not None and f.response.status_code == 403
    (b,) = rec.begins()
    assert (
        b.method == "CONNECT" and b.endpoint == "api.openai.com:443" and b.error == "agent_blocked"
    )
    # an active agent's tunnel goes on; the requests inside are checked one by one
    f2 = flow(
        host="api.openai.com",
        method="CONNECT",
        path="",
        body=b"",
        headers={"proxy-authorization": proxy_auth("fine")},
    )
    g.http_connect(f2)
    assert f2.response is None and len(rec.begins()) == 1


def test_fail_closed_refuses_before_the_table_loads(tctx: Any, home: Path) -> None:
    g, rec = start(home, GOVRIX_FAIL_MODE="fail_closed")
    f = flow(headers={"x-govrix-agent": "anyone"})
    g.request(f)
    assert f.response is not None and f.response.status_code == 503
    assert rec.begins()[0].error == "governance_unavailable"


# -- parse: no byte skips a gate -----------------------------------------------------------------------

BAD_BODIES = [
    b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"caf\xe9"}]}',
    b'{"model":"gpt-4o-mini\\ud800","messages":[]}',
    b"\x00\x01\x02",
    b"{",
]


@pytest.mark.parametrize("payload", BAD_BODIES)
def test_unparseable_body_under_a_policy_is_refused_by_default(
    tctx: Any, home: Path, payload: bytes
) -> None:
    policy = "rules:\n  - {name: no-o1, action: block, when: [{field: model, op: eq, value: o1}]}\n"
    g, rec = start(home, policy=policy)
    f = flow(body=payload, headers={"x-govrix-agent": "odd"})
    g.request(f)
    assert f.response is not None and f.response.status_code == 400
    assert body(f)["error"] == "unparseable_request" and body(f)["gate"] == "policy"
    (b,) = rec.begins()
    assert b.status_code == 400 and b.error == "unparseable_request"


def test_unparseable_body_forwarded_when_told(tctx: Any, home: Path) -> None:
    policy = "rules:\n  - {name: no-o1, action: block, when: [{field: model, op: eq, value: o1}]}\n"
    g, rec = start(home, policy=policy, GOVRIX_UNPARSEABLE="forward")
    f = flow(body=BAD_BODIES[0], headers={"x-govrix-agent": "odd"})
    g.request(f)
    assert f.response is None
    (b,) = rec.begins()
    assert b.status_code is None and b.body == BAD_BODIES[0]


def test_unparseable_body_without_enforcement_is_forwarded_and_recorded(
    tctx: Any, home: Path
) -> None:
    g, rec = start(home)
    f = flow(body=BAD_BODIES[0], headers={"x-govrix-agent": "odd"})
    g.request(f)
    assert f.response is None and len(rec.begins()) == 1


def test_broken_content_encoding_under_a_budget_is_refused(tctx: Any, home: Path) -> None:
    g, rec = start(home)
    g.budgets.set_specs([BudgetSpec(period="daily", metric="tokens", limit=1e9)])
    f = flow(body=b"not gzip", headers={"x-govrix-agent": "gz", "content-encoding": "gzip"})
    g.request(f)
    assert f.response is not None and f.response.status_code == 400
    assert body(f)["gate"] == "budget"
    assert rec.begins()[0].body is None


# -- budget, policy, pii --------------------------------------------------------------------------------


def test_budget_exceeded_is_429_with_retry_after(tctx: Any, home: Path) -> None:
    g, rec = start(home)
    g.budgets.set_specs([BudgetSpec(period="daily", metric="tokens", limit=10)])
    for _ in range(2):  # the first call may be admitted: the budget is not reached yet
        f = flow(headers={"x-govrix-agent": "spender"})
        g.request(f)
    assert f.response is not None and f.response.status_code == 429
    assert int(f.response.headers["retry-after"]) >= 1
    assert body(f)["error"] == "budget_exceeded" and "budget" in body(f)
    assert rec.begins()[-1].status_code == 429


def test_policy_block_releases_the_budget_reservation(tctx: Any, home: Path) -> None:
    policy = "rules:\n  - {name: no-mini, action: block, when: [{field: model, op: eq, value: gpt-4o-mini}]}\n"
    g, rec = start(home, policy=policy)
    g.budgets.set_specs([BudgetSpec(period="daily", metric="tokens", limit=100_000)])
    for _ in range(3):
        f = flow(headers={"x-govrix-agent": "p"})
        g.request(f)
        assert f.response is not None and f.response.status_code == 403
        assert body(f) | {"rule": "no-mini"} == body(f)
    assert [b.error for b in rec.begins()] == ["policy_blocked"] * 3
    assert not g._reservations  # nothing waits for a settlement
    assert all(t.tokens == 0 for t in g.budgets._reserved.values())


def test_policy_redact_rewrites_the_forwarded_body(tctx: Any, home: Path) -> None:
    policy = "rules:\n  - {name: scrub, action: redact, when: [{field: pii_detected, op: eq, value: true}]}\n"
    g, rec = start(home, policy=policy)
    payload = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"mail jane.doe@example.com"}]}'
    f = flow(body=payload, headers={"x-govrix-agent": "r"})
    g.request(f)
    assert f.response is None
    assert b"jane.doe@example.com" not in (f.request.content or b"")
    (b,) = rec.begins()
    assert b.findings and b.findings[0].type == "email"
    assert b.policy_decisions[-1]["redacted"] == 1


def test_mcp_call_is_scored_inline(tctx: Any, home: Path) -> None:
    g, rec = start(home)
    f = flow(host="tools.internal", path="/mcp", body=MCP_CALL, headers={"x-govrix-agent": "m"})
    g.request(f)
    assert f.response is None
    assert any(isinstance(m, Score) for m in rec.sent)
    (b,) = rec.begins()
    assert b.provider == "mcp" and b.tool_name == "read_file" and b.risk is not None


# -- a gate that raises -------------------------------------------------------------------------------


class Boom:
    name = "boom"

    def __call__(self, call: Any, flow: Any) -> None:
        raise RuntimeError("bug")


@pytest.mark.parametrize(("mode", "status"), [("refuse", 503), ("forward", None)])
def test_a_gate_that_raises_fails_as_configured(
    tctx: Any, home: Path, mode: str, status: int | None
) -> None:
    g, rec = start(home, GOVRIX_GATE_ERRORS=mode)
    g.gates.insert(0, Boom())
    f = flow(headers={"x-govrix-agent": "b"})
    g.request(f)
    (b,) = rec.begins()
    assert b.status_code == status
    assert {"phase": "request", "gate": "boom", "error": "exception"} in b.policy_decisions
    if status:
        assert f.response is not None and body(f)["error"] == "governance_error"
    else:
        assert f.response is None


# -- other hosts, the response side -------------------------------------------------------------------


def test_other_host_egress_is_metadata_only(tctx: Any, home: Path) -> None:
    g, rec = start(home)
    f = flow(
        host="files.example.com",
        path="/put?sig=SECRET",
        body=b"card 4111111111111111",
        method="PUT",
        headers={"x-govrix-agent": "e"},
    )
    g.request(f)
    (b,) = rec.begins()
    assert b.provider == "other" and b.body is None and b.findings == [] and b.path == "/put"
    f.response = tutils.tresp(content=b"ok")
    g.responseheaders(f)
    g.response(f)
    (e,) = [m for m in rec.sent if isinstance(m, End)]
    assert e.request_id == b.request_id and e.body is None and e.status_code == 200


def test_other_hosts_not_recorded_when_turned_off(tctx: Any, home: Path) -> None:
    g, rec = start(home, GOVRIX_RECORD_OTHER_HOSTS="0")
    f = flow(
        host="files.example.com", path="/", body=b"", method="GET", headers={"x-govrix-agent": "e"}
    )
    g.request(f)
    assert f.response is None and rec.begins() == []
    block(g, "e")  # ... but a blocked agent is still refused there, and that is recorded
    f = flow(
        host="files.example.com", path="/", body=b"", method="GET", headers={"x-govrix-agent": "e"}
    )
    g.request(f)
    assert f.response is not None and f.response.status_code == 403 and len(rec.begins()) == 1


def test_stop_records_calls_in_flight_as_aborted(tctx: Any, home: Path) -> None:
    g, rec = start(home)
    f = flow(headers={"x-govrix-agent": "slow"})
    g.request(f)
    g.done()
    (e,) = [m for m in rec.sent if isinstance(m, End)]
    assert e.request_id == rec.begins()[0].request_id and e.error == "aborted"


# -- property: whatever the bytes, a blocked agent is refused, once ------------------------------------

header_names = st.sampled_from(
    [
        b"content-encoding",
        b"content-type",
        b"host",
        b"x-govrix-agent",
        b"x-govrix-session",
        b"authorization",
        b"x-api-key",
        b"x-session-id",
        b"transfer-encoding",
        b"x-other",
    ]
)
header_values = st.one_of(
    st.sampled_from(
        [b"gzip", b"br", b"deflate", b"zstd", b"identity", b"gzip, br", b"application/json"]
    ),
    st.binary(max_size=40),
)
hosts = st.one_of(
    st.sampled_from(
        [
            "api.openai.com",
            "api.anthropic.com",
            "generativelanguage.googleapis.com",
            "example.org",
            "10.0.0.1",
            "bedrock-runtime.us-east-1.amazonaws.com",
        ]
    ),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True),
)
paths = st.one_of(
    st.sampled_from(["/v1/chat/completions", "/v1/messages", "/v1/responses", "/mcp", "/"]),
    st.text(max_size=30).map(lambda s: "/" + s),
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([CHAT, MCP_CALL, *BAD_BODIES]),
    st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


_started: dict[tuple[bool, bool], tuple[Govrix, ListRecorder]] = {}


def started(home: Path, policy: bool, budget: bool) -> tuple[Govrix, ListRecorder]:
    """One addon per configuration for all examples (starting one loads the scoring rules)."""
    if (policy, budget) not in _started:
        text = (
            "rules:\n  - {name: t, action: tag, tag: x, when: [{field: model, op: eq, value: m}]}\n"
        )
        g, rec = start(home, policy=text if policy else None)
        if budget:
            g.budgets.set_specs([BudgetSpec(period="daily", metric="tokens", limit=1e9)])
        block(g, "rogue")
        _started[(policy, budget)] = g, rec
    g, rec = _started[(policy, budget)]
    rec.sent.clear()
    return g, rec


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    host=hosts,
    path=paths,
    payload=bodies,
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
    extra=st.lists(st.tuples(header_names, header_values), max_size=6),
    policy=st.booleans(),
    budget=st.booleans(),
)
def test_a_blocked_agent_is_always_refused_once(
    home: Path,
    host: str,
    path: str,
    payload: bytes,
    method: str,
    extra: list[tuple[bytes, bytes]],
    policy: bool,
    budget: bool,
) -> None:
    # (no taddons context per example: the request path reads no option, and a context per
    # example would leave a log handler bound to a closed loop)
    g, rec = started(home, policy, budget)
    f = flow(
        host=host,
        path=path,
        body=payload,
        method=method,
        headers={"proxy-authorization": proxy_auth("rogue")},
        raw_headers=extra,
    )
    g.request(f)
    assert f.response is not None and f.response.status_code in (200, 403)
    begins = [m for m in rec.sent if isinstance(m, Begin)]
    assert len(begins) == 1 and begins[0].error == "agent_blocked"
    assert begins[0].agent_id == ids.agent_id("name:rogue")
    assert all(isinstance(m, Begin | AgentSeen | Score) for m in rec.sent)


@pytest.mark.parametrize(("mode", "refused"), [("refuse", True), ("forward", False)])
def test_a_failure_of_the_conductor_still_records_the_call(
    tctx: Any, home: Path, mode: str, refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    g, rec = start(home, GOVRIX_GATE_ERRORS=mode)

    def broken(*_: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(g, "_forward", broken)
    f = flow(headers={"x-govrix-agent": "c"})
    g.request(f)
    (b,) = rec.begins()
    assert (f.response is not None) is refused
    assert (b.error == "governance_error") is refused


async def test_a_call_waits_for_budget_room_held_in_flight(home: Path) -> None:
    """Room held by a call in flight: the next call is intercepted (the loop stays free) and goes
    on once the first settles below its bound; with nothing settled in time it is refused."""
    g, rec = start(home, GOVRIX_BUDGET_WAIT="5")
    g.budgets.set_specs([BudgetSpec(period="daily", metric="tokens", limit=3_000)])
    first = flow(
        headers={"x-govrix-agent": "w"},
        body=CHAT.replace(b'"messages"', b'"max_tokens":3000,"messages"'),
    )
    g.request(first)
    assert first.response is None and not first.intercepted  # admitted: 0 spent + 0 reserved
    second = flow(
        headers={"x-govrix-agent": "w"},
        body=CHAT.replace(b'"messages"', b'"max_tokens":3000,"messages"'),
    )
    g.request(second)
    assert second.intercepted and second.response is None and len(rec.begins()) == 1
    # the first call settles at its real (small) usage: room again
    key = rec.begins()[0].request_id
    g._on_reply(Settle(key, 40, None))
    await asyncio.wait_for(second.wait_for_resume(), 5)
    assert second.response is None and len(rec.begins()) == 2  # forwarded
    assert rec.begins()[1].status_code is None


async def test_a_waiting_call_is_refused_when_no_room_comes(home: Path) -> None:
    g, rec = start(home, GOVRIX_BUDGET_WAIT="0.2")
    g.budgets.set_specs([BudgetSpec(period="daily", metric="tokens", limit=3_000)])
    body = CHAT.replace(b'"messages"', b'"max_tokens":3000,"messages"')
    g.request(flow(headers={"x-govrix-agent": "w"}, body=body))
    second = flow(headers={"x-govrix-agent": "w"}, body=body)
    g.request(second)
    assert second.intercepted
    await asyncio.wait_for(second.wait_for_resume(), 5)
    assert second.response is not None and second.response.status_code == 429
    assert json.loads(second.response.content or b"{}")["budget"]["reason"] == "reserved"
    assert rec.begins()[-1].error == "budget_exceeded"


async def test_a_waiting_call_whose_client_left_is_recorded_not_forwarded(home: Path) -> None:
    g, rec = start(home, GOVRIX_BUDGET_WAIT="5")
    g.budgets.set_specs([BudgetSpec(period="daily", metric="tokens", limit=3_000)])
    body = CHAT.replace(b'"messages"', b'"max_tokens":3000,"messages"')
    g.request(flow(headers={"x-govrix-agent": "w"}, body=body))
    second = flow(headers={"x-govrix-agent": "w"}, body=body)
    g.request(second)
    assert second.intercepted
    second.error = tflow.terr("client disconnected")
    g.error(second)  # mitmproxy's error hook while it waits: the task records it
    assert len(rec.begins()) == 1 and not any(isinstance(m, End) for m in rec.sent)
    g._on_reply(Settle(rec.begins()[0].request_id, 40, None))
    await asyncio.wait_for(second.wait_for_resume(), 5)
    b = rec.begins()[-1]
    assert b.status_code == 499 and b.error == "client_closed"
    assert not any(isinstance(m, End) and m.request_id == b.request_id for m in rec.sent)
