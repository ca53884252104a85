"""The gates through the real mitmdump, tried as an attacker would: odd bytes, other hosts.

Every call is refused or forwarded as the gates say, and every one is in the audit trail and
served by the API, whatever its bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from addon import ids
from tests.apiutil import AUTH, live_server
from tests.fakeprovider import FakeProvider
from tests.proxyharness import Proxy, wait_events, wait_for

pytestmark = pytest.mark.e2e
URL = "https://api.openai.com/v1/chat/completions"
NOT_UTF8 = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"caf\xe9"}]}'


@pytest.fixture(scope="module")
def proxy(
    module_dsn: str, fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    p = Proxy(module_dsn, tmp_path_factory.mktemp("enforce"), fake).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def api(module_dsn: str) -> Iterator[Any]:
    with live_server(module_dsn) as srv:
        yield srv


def agent_id(name: str) -> str:
    return ids.agent_id("name:" + name)


def client(proxy: Proxy, name: str) -> httpx.Client:
    return httpx.Client(
        proxy=f"http://{name}:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context(), timeout=30
    )


def block(dsn: str, proxy: Proxy, name: str) -> None:
    """Register the agent with one call, block it, and wait until the proxy refuses it."""
    with client(proxy, name) as http:
        assert http.post(URL, json={"model": "gpt-4o-mini", "messages": []}).status_code == 200
    wait_for(lambda: _exists(dsn, agent_id(name)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE agents SET status = 'blocked' WHERE id = %s", (agent_id(name),))

    def refused() -> bool:
        with client(proxy, name) as http:
            try:
                http.post(URL, json={"model": "gpt-4o-mini", "messages": []})
            except httpx.ProxyError as e:  # the tunnel's credentials name it: refused at CONNECT
                return "403" in str(e)
            return False

    wait_for(refused)


def _exists(dsn: str, aid: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM agents WHERE id = %s", (aid,)).fetchone() is not None


def api_events(api: Any, aid: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{api.url}/api/v1/events", params={"agent_id": aid, "limit": 1000}, headers=AUTH)
    assert r.status_code == 200, r.text
    return list(r.json())


def test_a_blocked_agent_with_a_non_utf8_body_is_refused_and_recorded(
    proxy: Proxy, module_dsn: str, api: Any
) -> None:
    block(module_dsn, proxy, "rogue-bytes")
    # named by a header inside the tunnel this time: the request itself is refused
    with httpx.Client(proxy=proxy.url, verify=proxy.ssl_context(), timeout=30) as http:
        r = http.post(
            URL,
            content=NOT_UTF8,
            headers={"content-type": "application/json", "x-govrix-agent": "rogue-bytes"},
        )
    assert r.status_code == 403 and r.json()["error"] == "agent_blocked"
    rows = wait_events(
        module_dsn,
        1,
        "agent_id = %s AND status_code = 403 AND parse_error IS NOT NULL",
        (agent_id("rogue-bytes"),),
    )
    assert rows[0]["error"] == "agent_blocked"
    assert any(e["id"] == rows[0]["id"] for e in api_events(api, agent_id("rogue-bytes")))


def test_a_blocked_agent_cannot_reach_other_hosts(
    proxy: Proxy, fake: FakeProvider, module_dsn: str
) -> None:
    block(module_dsn, proxy, "rogue-egress")
    before = len(fake.requests)
    with client(proxy, "rogue-egress") as http:
        r = http.put(f"{fake.url}/upload", content=b"the customer table")
    assert r.status_code == 403 and r.json()["error"] == "agent_blocked"
    assert len(fake.requests) == before  # nothing reached the host
    rows = wait_events(
        module_dsn,
        1,
        "agent_id = %s AND provider = 'other' AND method = 'PUT'",
        (agent_id("rogue-egress"),),
    )
    assert rows[0]["status_code"] == 403 and rows[0]["endpoint"] == "/upload"
    assert rows[0]["host"] == "127.0.0.1" and rows[0]["method"] == "PUT"
    # its blocked tunnels were recorded too (refused at CONNECT)
    assert wait_events(
        module_dsn,
        1,
        "agent_id = %s AND method = 'CONNECT' AND status_code = 403",
        (agent_id("rogue-egress"),),
    )


def test_odd_bytes_of_an_active_agent_are_forwarded_and_queryable(
    proxy: Proxy, module_dsn: str, api: Any
) -> None:
    name = "odd-bytes"
    nul_model = json.dumps(
        {"model": "gpt\u0000-4o", "messages": [{"role": "user", "content": "a\u0000b"}]}
    )
    surrogate = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\\ud800"}]}'
    with client(proxy, name) as http:
        for payload in (NOT_UTF8, nul_model.encode(), surrogate):
            r = http.post(URL, content=payload, headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text  # no gate needs the parse: the provider decides
    rows = wait_events(module_dsn, 6, "agent_id = %s", (agent_id(name),), timeout=20)
    requests = [e for e in rows if e["direction"] == "request"]
    assert len(requests) == 3 and all(e["parent_id"] is None for e in requests)
    served = api_events(api, agent_id(name))
    assert {e["id"] for e in served} == {e["id"] for e in rows}
    nul = [
        e
        for e in served
        if e["model"] and "gpt" in e["model"] and "4o" in e["model"] and "mini" not in e["model"]
    ]
    assert nul and all("\x00" not in e["model"] for e in nul)
    assert all(e.get("sanitized") for e in nul)
    # and the session's chain covers what is stored
    for sid in {e["session_id"] for e in rows}:
        v = httpx.get(f"{api.url}/api/v1/sessions/{sid}/verify", headers=AUTH).json()
        assert v["valid"] is True, v


def test_unparseable_body_under_a_budget_is_refused(
    proxy: Proxy, module_dsn: str, tmp_path: Path, fake: FakeProvider
) -> None:
    name = "odd-budget"
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO budgets (scope, agent_id, period, metric, limit_value) "
            "VALUES ('agent', %s, 'daily', 'tokens', 1000000)",
            (agent_id(name),),
        )
    p = Proxy(module_dsn, tmp_path / "budget-home", fake).start()
    try:

        def refused() -> httpx.Response | None:
            with client(p, name) as http:
                r = http.post(URL, content=NOT_UTF8, headers={"content-type": "application/json"})
            return r if r.status_code == 400 else None

        r = wait_for(refused)  # once the budget table is loaded
        assert r.json()["error"] == "unparseable_request" and r.json()["gate"] == "budget"
        rows = wait_events(module_dsn, 1, "agent_id = %s AND status_code = 400", (agent_id(name),))
        assert rows[0]["error"] == "unparseable_request"
    finally:
        p.stop()
