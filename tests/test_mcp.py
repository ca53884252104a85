"""addon/mcp.py: JSON-RPC ``tools/call`` parsing, action names and inline scoring.

The request body is whatever a client (or an attacker) sends: parsing never raises and never
invents a call; any ``tools/call`` it finds becomes a valid ``mcp:<server>:<tool>`` action that
the engine scores without raising.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.mcp import MCP, InlineScorer, McpCall, parse_tools_call, rpc_error, safe_part, summary
from api.scoring import Engine
from api.scoring.bands import RISK_LEVELS
from api.scoring.models import ACTION_PATTERN

NOW = datetime(2026, 3, 5, 14, 20, tzinfo=UTC)


def rpc(**msg: Any) -> bytes:
    return msgspec.json.encode({"jsonrpc": "2.0", **msg})


CALL = {"method": "tools/call", "params": {"name": "read_file", "arguments": {"path": "/etc"}}}

# (case, body, expected call or None)
PARSE_CASES: list[tuple[str, bytes, McpCall | None]] = [
    ("plain call", rpc(id=1, **CALL), McpCall(1, "read_file", {"path": "/etc"})),
    ("string id", rpc(id="a-1", **CALL), McpCall("a-1", "read_file", {"path": "/etc"})),
    ("notification (no id)", rpc(**CALL), McpCall(None, "read_file", {"path": "/etc"})),
    ("no arguments", rpc(id=2, method="tools/call", params={"name": "ls"}), McpCall(2, "ls", {})),
    (
        "arguments not an object",
        rpc(id=3, method="tools/call", params={"name": "ls", "arguments": [1, 2]}),
        McpCall(3, "ls", {}),
    ),
    (
        "batch: first tools/call wins",
        msgspec.json.encode(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                {"jsonrpc": "2.0", "id": 2, **CALL},
                {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm"}},
            ]
        ),
        McpCall(2, "read_file", {"path": "/etc"}),
    ),
    ("other method", rpc(id=1, method="tools/list", params={"x": "tools/call"}), None),
    ("method not a string", rpc(id=1, method=["tools/call"]), None),
    ("params missing", rpc(id=1, method="tools/call"), None),
    ("params a list", rpc(id=1, method="tools/call", params=["read_file"]), None),
    ("name missing", rpc(id=1, method="tools/call", params={"arguments": {}}), None),
    ("name not a string", rpc(id=1, method="tools/call", params={"name": 7}), None),
    ("null params", rpc(id=1, method="tools/call", params=None), None),
    ("bare string", b'"tools/call"', None),
    ("number then text", b'1 "tools/call"', None),
    ("truncated", rpc(id=1, **CALL)[:-3], None),
    ("not UTF-8", b'{"method": "tools/call", "params": {"name": "\xff"}}', None),
    ("empty batch", b"[] /* tools/call */", None),
    ("batch of scalars", b'[1, "tools/call", null]', None),
    ("no marker at all", rpc(id=1, method="initialize"), None),
    ("empty body", b"", None),
    ("deep nesting", b"[" * 10_000 + b'"tools/call"' + b"]" * 10_000, None),
]


@pytest.mark.parametrize(("case", "body", "expected"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_tools_call(case: str, body: bytes, expected: McpCall | None) -> None:
    assert parse_tools_call(body) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=25,
)
rpc_messages = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | json_values,
        "id": json_values,
        "method": st.sampled_from(["tools/call", "tools/list", "initialize"]) | json_values,
        "params": st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=30) | json_values, "arguments": json_values}
        )
        | json_values,
    },
)
bodies = st.one_of(
    rpc_messages.map(msgspec.json.encode),
    st.lists(rpc_messages | json_values, max_size=5).map(msgspec.json.encode),
    json_values.map(msgspec.json.encode),
    st.binary(max_size=200).map(lambda b: b + b"tools/call"),
    st.binary(max_size=200),
)


@settings(max_examples=400, deadline=None)
@given(body=bodies)
def test_parse_never_raises_and_never_invents(body: bytes) -> None:
    call = parse_tools_call(body)
    if call is None:
        return
    assert isinstance(call.tool, str) and isinstance(call.arguments, dict)
    doc = msgspec.json.decode(body)
    messages = doc if isinstance(doc, list) else [doc]
    first = next(
        m for m in messages if isinstance(m, dict) and m.get("method") == "tools/call"
    )  # the call parsed is the first tools/call message, as sent
    assert first["params"]["name"] == call.tool and first.get("id") == call.rpc_id


@settings(max_examples=300, deadline=None)
@given(server=st.text(max_size=300), tool=st.text(max_size=300))
def test_any_names_make_a_valid_action(server: str, tool: str) -> None:
    s, t = safe_part(server), safe_part(tool)
    assert s and t and len(s) <= 120 and len(t) <= 120
    assert not re.search(r"[:\s]", s + t)
    assert re.match(ACTION_PATTERN, f"mcp:{s}:{t}")
    assert re.match(ACTION_PATTERN, f"tool:{t}:call")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("github", "github"),
        ("  my server ", "my_server"),
        ("a:b/c d", "a_b_c_d"),
        ("..--__x__--..", "x"),
        (":::", "unknown"),
        ("", "unknown"),
        ("x" * 500, "x" * 120),
    ],
)
def test_safe_part(value: str, expected: str) -> None:
    assert safe_part(value) == expected


def test_rpc_error_answers_the_request_id() -> None:
    doc = msgspec.json.decode(rpc_error("a-1", "blocked", {"rule": "r1"}))
    assert doc == {
        "jsonrpc": "2.0",
        "id": "a-1",
        "error": {"code": -32001, "message": "blocked", "data": {"rule": "r1"}},
    }


@pytest.mark.parametrize(
    ("body", "content_type", "error", "parse_error"),
    [
        (b"", "application/json", None, False),
        (rpc(id=1, result={"content": []}), "application/json", None, False),
        (rpc(id=1, error={"code": -32601, "message": "no"}), "application/json", "jsonrpc:-32601", False),
        (rpc(id=1, error="bad"), "application/json", "jsonrpc:None", False),
        (b"[1, 2]", "application/json", None, False),
        (b"event: message\ndata: {}\n\n", "text/event-stream", None, False),
        (b"<html>", "text/html", None, True),
    ],
)  # fmt: skip
def test_parse_response(
    body: bytes, content_type: str, error: str | None, parse_error: bool
) -> None:
    info = MCP.parse_response("tools/call", body, content_type)
    assert info.error == error
    assert (info.parse_error is not None) is parse_error


def test_parse_request_marks_what_is_not_a_call() -> None:
    info = MCP.parse_request("mcp", "/mcp", rpc(id=1, method="initialize"))
    assert info.parse_error == "not a tools/call"
    info = MCP.parse_request("mcp", "/mcp", rpc(id=1, **CALL))
    assert info.parse_error is None and info.tools == ["read_file"]
    assert any("/etc" in str(t) for t in info.text)  # argument strings go to the PII scan


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load()


def test_history_is_per_agent_and_server(engine: Engine) -> None:
    scorer = InlineScorer(engine)
    call = McpCall(1, "read_file", {"path": "/tmp/x"})
    kw: dict[str, Any] = {"session_id": "ses_1", "verified": True, "call": call, "timestamp": NOW}
    ev1, r1, _ = scorer.score_mcp(event_id="e1", agent_id="a", server="fs", **kw)
    assert ev1.action == "mcp:fs:read_file" and ev1.mcp_context is not None
    assert scorer._history("a", "fs").first_use_of_server is False
    assert scorer._history("b", "fs").first_use_of_server is True  # another agent
    assert scorer._history("a", "git").first_use_of_server is True  # another server
    assert scorer._history("a", None).recent_actions == ["mcp:fs:read_file"]
    for i in range(30):
        scorer.remember("a", f"tool:t{i}:call")
    recent = scorer._history("a", None).recent_actions
    assert len(recent) == 20 and recent[-1] == "tool:t29:call"
    assert r1.risk_level in RISK_LEVELS


def test_summary_carries_no_argument_values(engine: Engine) -> None:
    scorer = InlineScorer(engine)
    _, result = scorer.score_tool_call(
        event_id="e1",
        agent_id="a",
        session_id="ses_1",
        name="send_email",
        arguments='{"to": "victim@example.com", "body": "sk-live-secret"}',
        timestamp=NOW,
    )
    out = msgspec.json.encode(summary(result))
    assert b"victim" not in out and b"sk-live" not in out
    assert set(summary(result)) == {"score", "risk_level", "violations"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    server=st.text(max_size=80),
    tool=st.text(max_size=80),
    arguments=st.dictionaries(st.text(max_size=30), json_values, max_size=6),
    verified=st.booleans(),
)
def test_any_mcp_call_scores(
    engine: Engine, server: str, tool: str, arguments: dict[str, Any], verified: bool
) -> None:
    scorer = InlineScorer(engine)
    event, result, _ = scorer.score_mcp(
        event_id="evt_1",
        agent_id="agt_1",
        session_id="ses_1",
        server=server,
        verified=verified,
        call=McpCall(7, tool, arguments),
        timestamp=NOW,
    )
    assert re.match(ACTION_PATTERN, event.action)
    assert 1 <= result.score <= 100 and result.risk_level in RISK_LEVELS


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arguments=st.text(max_size=200) | json_values.map(lambda v: msgspec.json.encode(v).decode()))
def test_any_tool_call_arguments_score(engine: Engine, arguments: str) -> None:
    event, result = InlineScorer(engine).score_tool_call(
        event_id="evt_1",
        agent_id="agt_1",
        session_id="ses_1",
        name="run",
        arguments=arguments,
        timestamp=NOW,
    )
    assert event.action == "tool:run:call" and isinstance(event.parameters, dict)
    assert 1 <= result.score <= 100


def test_call_facts_say_where_the_steering_values_came_from(engine: Engine) -> None:
    """What a policy may test (``provenance``, ``destination``): classes, never the values."""
    scorer = InlineScorer(engine)
    kw: dict[str, Any] = {
        "agent_id": "a", "server": "mail", "verified": True,
        "timestamp": datetime(2026, 3, 1, 9, tzinfo=UTC),
    }  # fmt: skip
    send = {"to": "billing@elsewhere.example", "body": "as requested"}
    _, _, fresh = scorer.score_mcp(
        event_id="e1", session_id="s1", call=McpCall(1, "send_email", send), **kw
    )
    assert fresh.destination == "external" and fresh.provenance is None  # nothing seen yet
    # another agent reads the address from a tool's output first: the value is untrusted (for
    # "a" it is a counterparty already dealt with now, so internal)
    scorer.observe_tool_result("b", "s2", ["Invoices go to billing@elsewhere.example"])
    _, _, read = scorer.score_mcp(
        event_id="e2",
        session_id="s2",
        call=McpCall(2, "send_email", send),
        **(kw | {"agent_id": "b"}),
    )
    assert read.provenance == "untrusted" and read.destination == "external"
    _, _, none = scorer.score_mcp(
        event_id="e3", session_id="s3", call=McpCall(3, "list_issues", {"repo": "org/r"}), **kw
    )
    assert none.destination is None
