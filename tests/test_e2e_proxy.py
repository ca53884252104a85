"""End to end: the real ``mitmdump`` with our addon, a fake provider on loopback, real clients.

One proxy and one database per module (mitmdump takes a second to start); every test uses its
own agent name so that its events are its own.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import psycopg
import pytest

from addon import ids, lineage
from tests.fakeprovider import PROMPT_TOKENS, FakeProvider
from tests.proxyharness import Proxy, events, wait_events, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy(
    module_dsn: str, fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    p = Proxy(module_dsn, tmp_path_factory.mktemp("govrix-home"), fake).start()
    yield p
    p.stop()


def client(proxy: Proxy, agent: str, **kw: Any) -> httpx.Client:
    return httpx.Client(
        proxy=f"http://{agent}:x@127.0.0.1:{proxy.port}",
        verify=proxy.ssl_context(),
        timeout=30,
        **kw,
    )


def agent_id(name: str) -> str:
    return ids.agent_id("name:" + name)


def agent_events(dsn: str, name: str, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    return wait_events(dsn, n, "agent_id = %s", (agent_id(name),), timeout=timeout)


def pair(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    req = [r for r in rows if r["direction"] == "request"]
    resp = [r for r in rows if r["direction"] == "response"]
    assert len(req) == 1 and len(resp) == 1, rows
    assert resp[0]["parent_id"] == req[0]["id"]
    return req[0], resp[0]


# -- official SDKs ----------------------------------------------------------------------------------


def test_openai_sdk_non_streaming(proxy: Proxy, module_dsn: str) -> None:
    with client(proxy, "sdk-openai") as http:
        oa = openai.OpenAI(api_key="sk-test-not-real", http_client=http, max_retries=0)
        out = oa.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Say hi"}]
        )
    assert out.choices[0].message.content.startswith("Hello")
    req, resp = pair(agent_events(module_dsn, "sdk-openai", 2))
    assert req["provider"] == resp["provider"] == "openai"
    assert req["model"] == resp["model"] == "gpt-4o"
    assert req["session_id"] == resp["session_id"] and req["session_id"].startswith("ses_")
    assert (resp["prompt_tokens"], resp["completion_tokens"], resp["total_tokens"]) == (
        PROMPT_TOKENS,
        7,
        PROMPT_TOKENS + 7,
    )
    assert resp["usage_source"] == "reported" and resp["status_code"] == 200
    assert resp["cost_usd"] == pytest.approx((PROMPT_TOKENS * 2.5 + 7 * 10) / 1e6)
    assert req["compliance_tag"] == "default" and resp["lineage_hash"].startswith("sha256:")
    with psycopg.connect(module_dsn) as conn:
        row = conn.execute(
            "SELECT name, status, identity_kind FROM agents WHERE id = %s",
            (agent_id("sdk-openai"),),
        ).fetchone()
    assert row == ("sdk-openai", "active", "proxy_auth")


def test_openai_sdk_streaming_gets_usage_injected(
    proxy: Proxy, fake: FakeProvider, module_dsn: str
) -> None:
    with client(proxy, "sdk-openai-stream") as http:
        oa = openai.OpenAI(api_key="sk-test-not-real", http_client=http, max_retries=0)
        stream = oa.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("Hello")
    upstream_body = json.loads(fake.requests[-1]["body"])
    assert upstream_body["stream_options"] == {"include_usage": True}
    _, resp = pair(agent_events(module_dsn, "sdk-openai-stream", 2))
    assert (resp["prompt_tokens"], resp["completion_tokens"]) == (PROMPT_TOKENS, 5)
    assert (
        resp["usage_source"] == "reported"
        and resp["cost_usd"] > 0
        and resp["model"] == "gpt-4o-mini"
    )
    assert resp["ttfb_ms"] is not None and resp["ttfb_ms"] <= resp["latency_ms"]


def test_anthropic_sdk_non_streaming_and_streaming(proxy: Proxy, module_dsn: str) -> None:
    # anthropic's SDK ships its own HTTP client package (httpx2): configure the proxy through it.
    http = anthropic.DefaultHttpxClient(
        proxy=f"http://sdk-anthropic:x@127.0.0.1:{proxy.port}",
        verify=proxy.ssl_context(),
        timeout=30,
    )
    with http:
        an = anthropic.Anthropic(api_key="sk-ant-test-not-real", http_client=http, max_retries=0)
        msg = an.messages.create(
            model="claude-3-5-sonnet-20241022",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
        )
        assert msg.content[0].text.startswith("Hello")
        with an.messages.stream(
            model="claude-3-5-sonnet-20241022",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
        ) as s:
            streamed = "".join(s.text_stream)
        assert streamed.startswith("Hello")
    rows = agent_events(module_dsn, "sdk-anthropic", 4)
    responses = [r for r in rows if r["direction"] == "response"]
    assert len(responses) == 2
    for r in responses:
        assert r["provider"] == "anthropic" and r["model"] == "claude-3-5-sonnet-20241022"
        assert r["prompt_tokens"] == PROMPT_TOKENS and r["completion_tokens"] == 5
        assert r["usage_source"] == "reported" and r["cost_usd"] > 0
    assert len({r["session_id"] for r in rows}) == 1


def test_gemini_generate_and_stream(proxy: Proxy, module_dsn: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-1.5-pro"
    with client(proxy, "gemini-agent") as http:
        r1 = http.post(
            f"{base}:generateContent", json=body, headers={"x-goog-api-key": "AIza-test"}
        )
        r2 = http.post(f"{base}:streamGenerateContent?alt=sse", json=body)
    assert r1.status_code == r2.status_code == 200
    rows = agent_events(module_dsn, "gemini-agent", 4)
    responses = [r for r in rows if r["direction"] == "response"]
    assert {r["endpoint"] for r in responses} == {"generateContent", "streamGenerateContent"}
    for r in responses:
        assert r["provider"] == "gemini" and r["model"].startswith("gemini-1.5-pro")
        assert (r["prompt_tokens"], r["completion_tokens"]) == (PROMPT_TOKENS, 5)


# -- streaming passthrough ----------------------------------------------------------------------------


def test_stream_chunks_are_not_buffered(proxy: Proxy, fake: FakeProvider, module_dsn: str) -> None:
    rid = uuid.uuid4().hex
    received: list[float] = []
    with (
        client(proxy, "stream-timing") as http,
        http.stream(
            "POST",
            "https://api.openai.com/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": "count"}],
            },
            headers={"x-fake-id": rid, "x-fake-chunks": "10", "x-fake-delay-ms": "200"},
        ) as r,
    ):
        for chunk in r.iter_raw():
            if chunk:
                received.append(time.time())
    sent = fake.sent[rid]
    assert len(sent) >= 10
    first_delay = received[0] - sent[0]
    assert first_delay < 0.05, (
        f"first chunk reached the client {first_delay * 1000:.1f} ms after it was sent"
    )
    # and the stream was not collapsed into one delivery at the end
    assert received[-1] - received[0] > 1.5
    _, resp = pair(agent_events(module_dsn, "stream-timing", 2))
    assert resp["completion_tokens"] == 10 and resp["ttfb_ms"] < resp["latency_ms"] - 1500


def test_client_disconnect_mid_stream_still_records_response(proxy: Proxy, module_dsn: str) -> None:
    with (
        client(proxy, "quitter") as http,
        http.stream(
            "POST",
            "https://api.openai.com/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": "long"}],
            },
            headers={"x-fake-chunks": "10", "x-fake-delay-ms": "300"},
        ) as r,
    ):
        next(r.iter_raw())
    _, resp = pair(agent_events(module_dsn, "quitter", 2, timeout=15))
    assert resp["error"] is not None


# -- bad input is forwarded intact and recorded with parse_error ---------------------------------------


@pytest.mark.parametrize("mode", ["malformed", "truncated"])
def test_bad_payloads_forward_intact(proxy: Proxy, module_dsn: str, mode: str) -> None:
    name = f"bad-{mode}"
    stream = mode == "truncated"
    with client(proxy, name) as http:
        r = http.post(
            "https://api.openai.com/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "stream": stream,
                "messages": [{"role": "user", "content": "x"}],
            },
            headers={"x-fake-mode": mode},
        )
    assert r.status_code == 200
    if mode == "malformed":
        assert r.content == b'{"id": "chatcmpl-1", "choices": [ {"message": '
    _, resp = pair(agent_events(module_dsn, name, 2))
    assert resp["parse_error"], resp


@pytest.mark.parametrize("encoding", ["gzip", "br"])
@pytest.mark.parametrize("stream", [False, True])
def test_encoded_bodies(proxy: Proxy, module_dsn: str, encoding: str, stream: bool) -> None:
    name = f"enc-{encoding}-{stream}"
    with client(proxy, name) as http:
        r = http.post(
            "https://api.openai.com/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "stream": stream,
                "messages": [{"role": "user", "content": "x"}],
            },
            headers={"x-fake-mode": encoding},
        )
    assert r.status_code == 200 and b"Hello" in r.content
    assert r.headers.get("content-encoding") == encoding  # forwarded as the upstream sent it
    _, resp = pair(agent_events(module_dsn, name, 2))
    assert (
        resp["parse_error"] is None
        and resp["usage_source"] == "reported"
        and resp["completion_tokens"] >= 5
    )


def test_gzip_request_body(proxy: Proxy, fake: FakeProvider, module_dsn: str) -> None:
    body = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "call 415-555-2671"}]}
    ).encode()
    with client(proxy, "gzip-req") as http:
        r = http.post(
            "https://api.openai.com/v1/chat/completions",
            content=gzip.compress(body),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
    assert r.status_code == 200
    assert gzip.decompress(fake.requests[-1]["body"]) == body
    req, _ = pair(agent_events(module_dsn, "gzip-req", 2))
    assert req["model"] == "gpt-4o" and req["pii_types"] == ["phone"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed as the HTTP/2 client")
def test_http2_client(proxy: Proxy, module_dsn: str) -> None:
    # httpx does not speak HTTP/2 inside a proxy tunnel; curl does (ALPN h2 with our CA).
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-v",
            "--http2",
            "-x",
            f"http://h2-agent:x@127.0.0.1:{proxy.port}",
            "--cacert",
            str(proxy.ca),
            "https://api.openai.com/v1/chat/completions",
            "-H",
            "content-type: application/json",
            "-d",
            json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "< HTTP/2 200" in out.stderr
    assert json.loads(out.stdout)["choices"][0]["message"]["content"].startswith("Hello")
    _, resp = pair(agent_events(module_dsn, "h2-agent", 2))
    assert resp["completion_tokens"] == 7


def test_huge_bodies(proxy: Proxy, fake: FakeProvider, module_dsn: str) -> None:
    big_prompt = "lorem ipsum " * (10 * 1024 * 1024 // 12)
    with client(proxy, "huge") as http:
        r = http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": big_prompt}]},
            headers={"x-fake-mode": "huge"},
        )
    assert r.status_code == 200
    assert len(r.json()["choices"][0]["message"]["content"]) == 10 * 1024 * 1024
    assert len(json.loads(fake.requests[-1]["body"])["messages"][0]["content"]) == len(big_prompt)
    req, resp = pair(agent_events(module_dsn, "huge", 2, timeout=20))
    assert req["request_bytes"] > 10_000_000 and resp["response_bytes"] > 10_000_000


def test_upstream_error_is_recorded_unbilled(proxy: Proxy, module_dsn: str) -> None:
    with client(proxy, "rate-limited") as http:
        r = http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
            headers={"x-fake-mode": "error"},
        )
    assert r.status_code == 429
    _, resp = pair(agent_events(module_dsn, "rate-limited", 2))
    assert resp["status_code"] == 429 and resp["cost_usd"] is None


# -- identity, sessions, headers ----------------------------------------------------------------------


def test_our_headers_and_credentials_never_go_upstream(proxy: Proxy, fake: FakeProvider) -> None:
    with httpx.Client(
        proxy=f"http://cred-agent:secret-token@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
    ) as http:
        http.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o", "messages": []},
            headers={
                "X-Govrix-Session": "abc",
                "X-Govrix-Agent": "other",
                "X-Agent-ID": "x",
                "X-Govrix-Foo": "1",
            },
        )
    seen = fake.requests[-1]["headers"]
    assert not [
        h for h in seen if h.startswith("x-govrix") or h in ("proxy-authorization", "x-agent-id")
    ]
    assert "secret-token" not in json.dumps(seen)


def test_identity_precedence_and_api_key_hash(proxy: Proxy, module_dsn: str) -> None:
    url = "https://api.openai.com/v1/chat/completions"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    raw_key = "sk-proj-SECRETSECRET1234567890abcdef"
    with httpx.Client(proxy=proxy.url, verify=proxy.ssl_context()) as http:
        http.post(
            url,
            json=body,
            headers={"X-Govrix-Agent": "header-agent", "authorization": f"Bearer {raw_key}"},
        )
        http.post(url, json=body, headers={"authorization": f"Bearer {raw_key}"})
        http.post(
            url, json=body, headers={"X-Govrix-Session": "my-run-42", "X-Agent-ID": "alias-agent"}
        )
    agent_events(module_dsn, "header-agent", 2)
    rows = agent_events(module_dsn, "alias-agent", 2)
    assert {r["session_id"] for r in rows} == {"ses_my-run-42"}
    with psycopg.connect(module_dsn) as conn:
        kinds = dict(conn.execute("SELECT name, identity_kind FROM agents").fetchall())
        dump = json.dumps(
            [list(map(str, r)) for r in conn.execute("SELECT * FROM events").fetchall()]
        )
        dump += json.dumps(
            [list(map(str, r)) for r in conn.execute("SELECT * FROM agents").fetchall()]
        )
    assert kinds["header-agent"] == "header" and kinds["alias-agent"] == "header"
    key_agents = [n for n, k in kinds.items() if k == "api_key"]
    assert key_agents and all(n.startswith("key-") for n in key_agents)
    assert raw_key not in dump and "SECRETSECRET" not in dump


def test_other_hosts_are_recorded_as_metadata_only(
    proxy: Proxy, fake: FakeProvider, module_dsn: str
) -> None:
    """Egress to a host that is no LLM provider nor MCP: host, method, path, status, bytes; no body."""
    sent = b'{"card": "4111 1111 1111 1111", "note": "SECRETBODY"}'
    with httpx.Client(proxy=proxy.url) as http:
        r = http.post(
            f"{fake.url}/not-an-llm?token=SECRETQUERY",
            headers={"X-Govrix-Agent": "egress-agent"},
            content=sent,
        )
    assert r.status_code == 404 and r.json() == {"error": "not found"}
    rows = wait_events(
        module_dsn, 2, "agent_id = (SELECT id FROM agents WHERE name = 'egress-agent')", timeout=15
    )
    req, resp = sorted(rows, key=lambda e: e["direction"] != "request")
    assert req["provider"] == resp["provider"] == "other"
    assert req["endpoint"] == "/not-an-llm" and resp["parent_id"] == req["id"]
    assert resp["status_code"] == 404 and resp["response_bytes"] == len(r.content)
    assert req["request_bytes"] == len(sent) and resp["latency_ms"] is not None
    assert req["host"] == resp["host"] == "127.0.0.1" and req["method"] == resp["method"] == "POST"
    assert not req["pii_detected"] and not resp["pii_detected"] and req["model"] is None
    dump = json.dumps([list(map(str, e.values())) for e in rows])
    assert "SECRETQUERY" not in dump and "SECRETBODY" not in dump and "4111 1111" not in dump


# -- lineage ------------------------------------------------------------------------------------------


def test_lineage_verifies_and_names_the_altered_event(proxy: Proxy, module_dsn: str) -> None:
    with client(proxy, "chain-agent") as http:
        for i in range(3):
            http.post(
                "https://api.openai.com/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": f"turn {i}"}]},
                headers={"x-session-id": "chain-1"},
            )
    rows = agent_events(module_dsn, "chain-agent", 6)
    assert [r["seq"] for r in sorted(rows, key=lambda r: r["seq"])] == [1, 2, 3, 4, 5, 6]
    verdict = lineage.verify("ses_chain-1", rows)
    assert verdict.valid and verdict.events_checked == 6
    victim = sorted(rows, key=lambda r: r["seq"])[3]
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("UPDATE events SET completion_tokens = 1 WHERE id = %s", (victim["id"],))
    verdict = lineage.verify("ses_chain-1", events(module_dsn, "session_id = %s", ("ses_chain-1",)))
    assert not verdict.valid
    assert verdict.broken_event_id == victim["id"] and verdict.broken_seq == victim["seq"]
    assert "altered" in (verdict.reason or "")


# -- kill switch ----------------------------------------------------------------------------------------


def test_kill_switch_blocks_within_a_second_without_queries(proxy: Proxy, module_dsn: str) -> None:
    name = "rogue-agent"
    aid = agent_id(name)
    url = "https://api.openai.com/v1/chat/completions"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    with client(proxy, name) as http:
        assert http.post(url, json=body).status_code == 200
        wait_for(lambda: _agent_row(module_dsn, aid))
        with psycopg.connect(module_dsn, autocommit=True) as conn:
            time.sleep(1.2)
            calls_before = _proxy_statement_calls(conn)
            conn.execute(
                "UPDATE agents SET status = 'blocked', updated_at = now() WHERE id = %s", (aid,)
            )
            t_block = time.monotonic()
            statuses = []
            first_403 = None
            while time.monotonic() - t_block < 3:
                r = http.post(url, json=body)
                statuses.append(r.status_code)
                if r.status_code == 403 and first_403 is None:
                    first_403 = time.monotonic() - t_block
                    assert r.json() == {
                        "error": "agent_blocked",
                        "message": r.json()["message"],
                        "agent_id": aid,
                    }
            assert first_403 is not None and first_403 < 1.0, statuses
            n_requests = len(statuses)
            time.sleep(1.2)  # backends flush their table statistics at most once a second
            calls_after = _proxy_statement_calls(conn)
            conn.execute("UPDATE agents SET status = 'active' WHERE id = %s", (aid,))
            t_unblock = time.monotonic()
            wait_for(lambda: http.post(url, json=body).status_code == 200, timeout=2)
            assert time.monotonic() - t_unblock < 1.0
    # A per-request lookup would scan the agents table at least once per request; the proxy reads
    # it only on (re)load and applies NOTIFY payloads, so the scans do not grow with the requests.
    # A few unrelated scans can land in the window: other backends (the writer's agent upserts
    # from earlier tests) flush their statistics lazily, up to 10 s late when idle.
    assert n_requests > 100
    assert (calls_after - calls_before) * 50 < n_requests, (calls_before, calls_after, n_requests)
    blocked = events(module_dsn, "agent_id = %s AND status_code = 403", (aid,))
    assert blocked and all(
        r["error"] == "agent_blocked" and r["direction"] == "request" for r in blocked
    )


def _agent_row(dsn: str, aid: str) -> Any:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT status FROM agents WHERE id = %s", (aid,)).fetchone()


def _proxy_statement_calls(conn: psycopg.Connection[Any]) -> int:
    """Every read of the agents table so far (sequential and index scans)."""
    row = conn.execute(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'agents'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _listeners(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (/proc/net/tcp and tcp6)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                if table == "tcp":
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_proxy_port_is_loopback(proxy: Proxy) -> None:
    """The proxy listens on 127.0.0.1 alone: not on 0.0.0.0, not on ::, not on another address."""
    assert _listeners(proxy.port) == {"127.0.0.1"}


# -- modes ----------------------------------------------------------------------------------------------


def test_reverse_mode_per_provider(module_dsn: str, fake: FakeProvider, tmp_path: Path) -> None:
    """For clients that cannot use a proxy: a reverse listener per provider beside the explicit one."""
    from tests.fakeprovider import free_port

    rport = free_port()
    proxy = Proxy(
        module_dsn,
        tmp_path,
        fake,
        args=["--mode", "regular", "--mode", f"reverse:https://api.openai.com@{rport}"],
    )
    proxy.start()
    try:
        r = httpx.post(
            f"http://127.0.0.1:{rport}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
            headers={"X-Govrix-Agent": "reverse-client"},
        )
    finally:
        proxy.stop()
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == PROMPT_TOKENS
    _, resp = pair(agent_events(module_dsn, "reverse-client", 2))
    assert resp["provider"] == "openai" and resp["completion_tokens"] == 7
