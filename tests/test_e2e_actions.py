"""Agent actions through the real proxy: MCP tool calls and LLM tool calls scored inline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from addon import ids
from tests.fakeprovider import FakeProvider
from tests.proxyharness import Proxy, wait_events, wait_for

pytestmark = pytest.mark.e2e

POLICY = """
version: 1
rules:
  - name: no-mcp-calls-to-outsiders
    when:
      - {field: tool_name, op: regex, value: "."}
      - {field: destination, op: eq, value: external}
    action: block
    message: this tool call sends to an outside party
  - name: stop-risky-mcp-calls
    when:
      - {field: tool_name, op: regex, value: "."}
      - {field: risk_level, op: gte, value: high}
    action: block
    message: this tool call is too risky to run unattended
"""


@pytest.fixture(scope="module")
def proxy(
    module_dsn: str, fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    home = tmp_path_factory.mktemp("act-home")
    policy = Path(home) / "policy.yaml"
    policy.write_text(POLICY)
    env = {
        "GOVRIX_POLICY_FILE": str(policy),
        "GOVRIX_MCP_SERVERS": f"127.0.0.1:{fake.port}=github-mcp",
    }
    p = Proxy(module_dsn, home, fake, env=env).start()
    yield p
    p.stop()


def rpc(tool: str, arguments: dict[str, Any], rpc_id: int = 7) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }


def scores(dsn: str, event_id_prefix: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT a.action, s.* FROM scores s JOIN actions a USING (customer_id, event_id) "
            "WHERE s.customer_id = 'proxy' AND s.event_id LIKE %s ORDER BY s.event_id",
            (event_id_prefix + "%",),
        )
        return cur.fetchall()


def test_benign_mcp_call_is_scored_and_forwarded(
    proxy: Proxy, fake: FakeProvider, module_dsn: str
) -> None:
    with httpx.Client(proxy=proxy.url, headers={"X-Govrix-Agent": "mcp-reader"}) as http:
        r = http.post(f"{fake.url}/mcp", json=rpc("list_issues", {"repo": "org/repo"}))
    assert r.status_code == 200 and r.json()["result"] == {"content": []}
    rows = wait_events(module_dsn, 2, "agent_id = %s", (ids.agent_id("name:mcp-reader"),))
    req = next(r for r in rows if r["direction"] == "request")
    assert req["provider"] == "mcp" and req["endpoint"] == "tools/call"
    (tool,) = req["tool_calls"]
    assert tool["name"] == "list_issues" and tool["risk_level"] in ("none", "low"), tool
    (score,) = wait_for(lambda: scores(module_dsn, req["id"]))
    assert (
        score["action"] == "mcp:github-mcp:list_issues"
        and score["risk_level"] == tool["risk_level"]
    )
    assert score["scorer_version"] and score["score_components"]


def test_risky_mcp_call_gets_a_json_rpc_error(
    proxy: Proxy, fake: FakeProvider, module_dsn: str
) -> None:
    n_before = len(fake.requests)
    args = {
        "command": "rm -rf / --no-preserve-root",
        "api_key": "sk-proj-abcdefABCDEF1234567890xyz",
    }
    with httpx.Client(proxy=proxy.url, headers={"X-Govrix-Agent": "mcp-wrecker"}) as http:
        r = http.post(f"{fake.url}/mcp", json=rpc("execute_shell_command", args, rpc_id=42))
    assert r.status_code == 200
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == 42
    assert body["error"]["code"] == -32001
    assert body["error"]["message"] == "this tool call is too risky to run unattended"
    assert body["error"]["data"]["risk_level"] in ("high", "critical")
    assert body["error"]["data"]["rule"] == "stop-risky-mcp-calls"
    assert len(fake.requests) == n_before, "a blocked call must not reach the MCP server"
    (req,) = wait_events(module_dsn, 1, "agent_id = %s", (ids.agent_id("name:mcp-wrecker"),))
    assert req["error"] == "policy_blocked" and "secret" in req["pii_types"]
    assert "sk-proj-abcdef" not in json.dumps(req, default=str)
    (score,) = wait_for(lambda: scores(module_dsn, req["id"]))
    assert score["risk_level"] in ("high", "critical") and score["violations"]


def test_a_policy_blocks_an_mcp_call_to_an_outside_destination(
    proxy: Proxy, fake: FakeProvider, module_dsn: str
) -> None:
    n_before = len(fake.requests)
    args = {"to": "someone@elsewhere.example", "subject": "notes", "body": "see you"}
    with httpx.Client(proxy=proxy.url, headers={"X-Govrix-Agent": "mcp-mailer"}) as http:
        r = http.post(f"{fake.url}/mcp", json=rpc("send_email", args, rpc_id=9))
    body = r.json()
    assert body["error"]["data"]["rule"] == "no-mcp-calls-to-outsiders", body
    assert len(fake.requests) == n_before
    (req,) = wait_events(module_dsn, 1, "agent_id = %s", (ids.agent_id("name:mcp-mailer"),))
    assert req["error"] == "policy_blocked"
    assert req["policy_decisions"][0]["block"] == "no-mcp-calls-to-outsiders"


def test_tool_calls_in_llm_responses_are_scored(proxy: Proxy, module_dsn: str) -> None:
    with httpx.Client(
        proxy=f"http://tool-user:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
    ) as http:
        r = http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "clean up"}]},
            headers={"x-fake-mode": "tools"},
        )
    assert r.status_code == 200
    rows = wait_events(module_dsn, 2, "agent_id = %s", (ids.agent_id("name:tool-user"),))
    resp = next(r for r in rows if r["direction"] == "response")
    drop, weather = resp["tool_calls"]
    assert (
        drop["action"] == "tool:drop_database:call" and weather["action"] == "tool:get_weather:call"
    )
    order = ["none", "low", "medium", "high", "critical"]
    assert order.index(drop["risk_level"]) > order.index(weather["risk_level"])
    assert "prod-customers" not in json.dumps(resp, default=str)  # arguments never stored in events
    stored = wait_for(lambda: s if len(s := scores(module_dsn, resp["id"])) == 2 else None)
    assert [s["action"] for s in stored] == ["tool:drop_database:call", "tool:get_weather:call"]
