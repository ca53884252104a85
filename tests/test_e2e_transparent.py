"""Transparent mode end to end: an agent in its own network namespace, with no proxy settings.

The agent's namespace is joined to the host by a veth pair; its TCP port-443 traffic is
redirected (``iptables -t nat … REDIRECT``, on the host side of the veth) to ``mitmdump --mode
transparent``, which names the provider by SNI/Host, forwards to the fake provider
(``GOVRIX_UPSTREAM_OPENAI``, as every e2e test does), records the call and applies the kill
switch. The agent resolves ``api.openai.com`` to an address of our choosing (the namespace's own
``/etc/hosts``) and trusts the proxy's CA through ``SSL_CERT_FILE``: what an operator does for a
host or container that cannot be told about a proxy (README, "Modes").

Needs root, ``ip netns`` and ``iptables``; skipped with the reason otherwise. Every name (namespace,
veth, subnet, rule comment) is unique per run and removed in a finalizer, even on failure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import select
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mitmproxy import http

from addon import ids
from addon.identity import scan_headers
from addon.route import Router, host_port
from tests.fakeprovider import PROMPT_TOKENS, FakeProvider
from tests.proxyharness import Proxy, wait_events, wait_for

pytestmark = pytest.mark.e2e

#: Where the agent believes api.openai.com is (TEST-NET-3: never routed anywhere for real; the
#: redirect answers for it on the host side of the veth).
PROVIDER_ADDRESS = "203.0.113.10"
HOST = "api.openai.com"
ETC_NETNS = Path("/etc/netns")
#: Seconds one agent call may take before the test fails (calls take milliseconds).
CALL_TIMEOUT = 20.0

# The agent: a long-lived process inside the namespace, one JSON command per line on stdin, one
# JSON answer per line on stdout. The openai SDK for a keyed call, bare httpx for a keyless one,
# and HTTP/1.0 over a bare TLS socket for a request without a Host header (only the SNI names
# the provider). It starts while the proxy does (imports take seconds) and reads SSL_CERT_FILE at
# its first call.
AGENT = r"""
import json, os, socket, ssl, sys
import httpx, openai

assert not [k for k in os.environ if k.lower().endswith("_proxy")], "no proxy settings here"
URL = "https://api.openai.com/v1/chat/completions"
http = None
for line in sys.stdin:
    cmd = json.loads(line)
    BODY = {"model": cmd["model"], "messages": [{"role": "user", "content": "hi"}]}
    try:
        http = http or httpx.Client(timeout=10)
        if cmd.get("bare"):
            body = json.dumps(BODY).encode()
            head = (
                "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {cmd['key']}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            tls = ssl.create_default_context()
            with socket.create_connection(("api.openai.com", 443), timeout=10) as raw:
                with tls.wrap_socket(raw, server_hostname="api.openai.com") as conn:
                    conn.sendall(head.encode() + body)
                    reply = b"".join(iter(lambda: conn.recv(65536), b""))
            answer = {"status": int(reply.split(b" ", 2)[1])}
        elif cmd.get("key"):
            oa = openai.OpenAI(api_key=cmd["key"], http_client=http, max_retries=0)
            try:
                out = oa.chat.completions.create(**BODY)
                answer = {"status": 200, "text": out.choices[0].message.content}
            except openai.APIStatusError as e:
                answer = {"status": e.status_code, "body": e.response.json()}
        else:
            r = http.post(URL, json=BODY)
            answer = {"status": r.status_code, "body": r.json()}
    except Exception as e:
        answer = {"status": None, "error": repr(e)}
    print(json.dumps(answer), flush=True)
"""


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)


def _quietly(*cmd: str) -> bool:
    """A cleanup step: never raises, so the next one runs too."""
    try:
        return _run(*cmd).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _must(*cmd: str) -> None:
    r = _run(*cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "transparent mode redirects with Linux netfilter"
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if shutil.which("iptables") is None:
        return "needs iptables (.ci/run installs it as root: apt-get install iptables)"
    if (r := _run("iptables", "-t", "nat", "-S", "PREROUTING")).returncode != 0:
        return f"iptables cannot use the nat table here: {r.stderr.strip()}"
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of 10.0.0.0/8 that no address or route of this host is in (random per run)."""
    taken = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route").stdout
    nets = [n for word in taken.split() if (n := _network(word)) is not None]
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.{random.randrange(64, 250)}.{random.randrange(256)}.0/30")
        if not any(net.overlaps(n) for n in nets):
            return net
    raise RuntimeError("no free /30 in 10.0.0.0/8")


def _network(word: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(word, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class AgentNet:
    """The agent's namespace and its link to the host."""

    ns: str
    host_if: str
    agent_if: str
    host_ip: str
    agent_ip: str
    comment: str

    def redirect_rule(self, port: int) -> list[str]:
        """The nat rule (without -A/-D) that sends the agent's port-443 traffic to the proxy."""
        return [
            "PREROUTING",
            "-i",
            self.host_if,
            "-p",
            "tcp",
            "--dport",
            "443",
            "-m",
            "comment",
            "--comment",
            self.comment,
            "-j",
            "REDIRECT",
            "--to-ports",
            str(port),
        ]


@pytest.fixture(scope="module")
def agent_net() -> Iterator[AgentNet]:
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:8]
    net = _free_subnet()
    host_ip, agent_ip = (str(a) for a in net.hosts())
    n = AgentNet(f"govrix-t-{tag}", f"gvh{tag}", f"gva{tag}", host_ip, agent_ip, f"govrix-{tag}")
    probe = _run("ip", "netns", "add", n.ns)
    if probe.returncode != 0:
        pytest.skip(f"ip netns add is not permitted here: {probe.stderr.strip()}")
    made_etc = not ETC_NETNS.exists()
    try:
        (ETC_NETNS / n.ns).mkdir(parents=True)
        # ip netns exec bind-mounts this over /etc/hosts: the agent's name resolution only.
        (ETC_NETNS / n.ns / "hosts").write_text(f"127.0.0.1 localhost\n{PROVIDER_ADDRESS} {HOST}\n")
        _must("ip", "link", "add", n.host_if, "type", "veth", "peer", "name", n.agent_if)
        _must("ip", "link", "set", n.agent_if, "netns", n.ns)
        _must("ip", "addr", "add", f"{host_ip}/30", "dev", n.host_if)
        _must("ip", "link", "set", n.host_if, "up")
        _must("ip", "-n", n.ns, "addr", "add", f"{agent_ip}/30", "dev", n.agent_if)
        _must("ip", "-n", n.ns, "link", "set", n.agent_if, "up")
        _must("ip", "-n", n.ns, "link", "set", "lo", "up")
        _must("ip", "-n", n.ns, "route", "add", "default", "via", host_ip)
        yield n
    finally:
        # Each step on its own: what a failed setup left behind is removed all the same.
        _quietly("ip", "link", "del", n.host_if)  # takes its peer with it
        _quietly("ip", "netns", "del", n.ns)
        shutil.rmtree(ETC_NETNS / n.ns, ignore_errors=True)
        if made_etc:
            with contextlib.suppress(OSError):  # not empty: another run uses it now
                ETC_NETNS.rmdir()


class Agent:
    """The agent process inside the namespace: no HTTPS_PROXY, our CA in SSL_CERT_FILE."""

    def __init__(self, net: AgentNet, ca: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["SSL_CERT_FILE"] = str(ca)
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", net.ns, sys.executable, "-c", AGENT],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )

    def call(
        self, key: str | None = None, bare: bool = False, model: str = "gpt-4o-mini"
    ) -> dict[str, Any]:
        """One chat completion to https://api.openai.com, as the agent makes it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"key": key, "bare": bare, "model": model}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], CALL_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise AssertionError(
                f"the agent did not answer within {CALL_TIMEOUT}s: {self.log.read_text()}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


@pytest.fixture(scope="module")
def agent(
    agent_net: AgentNet,
    module_dsn: str,
    fake: FakeProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Agent]:
    """``mitmdump --mode transparent`` on the host side of the veth, behind the redirect, and
    the agent in its namespace (started first: its imports overlap the proxy's start)."""
    home = tmp_path_factory.mktemp("transparent")
    p = Proxy(module_dsn, home, fake, args=["--mode", "transparent"], listen_host=agent_net.host_ip)
    rule = agent_net.redirect_rule(p.port)
    a: Agent | None = None
    try:
        _must("iptables", "-t", "nat", "-A", *rule)
        a = Agent(agent_net, p.ca, home / "agent.log")
        p.start()
        yield a
    finally:
        try:
            if a is not None:
                a.stop()
            p.stop()
        finally:
            _quietly("iptables", "-t", "nat", "-D", *rule)


def _agent_row(dsn: str, aid: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT name, identity_kind, source_ip, status FROM agents WHERE id = %s", (aid,)
        ).fetchone()


def test_a_call_from_the_namespace_is_intercepted_and_recorded(
    agent: Agent, agent_net: AgentNet, fake: FakeProvider, module_dsn: str
) -> None:
    before = len(fake.requests)
    answer = agent.call(key="sk-transparent-test")
    assert answer["status"] == 200, answer
    assert answer["text"].startswith("Hello")
    # the redirect sent it through the proxy to the fake provider, not to 203.0.113.10
    assert len(fake.requests) == before + 1
    assert fake.requests[-1]["path"] == "/v1/chat/completions"
    assert "authorization" in fake.requests[-1]["headers"]

    rows = wait_events(
        module_dsn,
        2,
        "agent_id IN (SELECT id FROM agents WHERE identity_kind = 'api_key') AND model = %s",
        ("gpt-4o-mini",),
    )
    req, resp = rows if rows[0]["direction"] == "request" else rows[::-1]
    assert resp["parent_id"] == req["id"]
    # named by SNI/Host, not by the address it was sent to
    assert req["provider"] == resp["provider"] == "openai"
    assert req["host"] == HOST and req["endpoint"] == resp["endpoint"]
    assert resp["status_code"] == 200 and resp["prompt_tokens"] == PROMPT_TOKENS
    name, kind, source_ip, status = wait_for(lambda: _agent_row(module_dsn, req["agent_id"]))
    # no proxy credentials in transparent mode: the key names the agent, seen from its address
    assert (kind, source_ip, status) == ("api_key", agent_net.agent_ip, "active")
    assert name.startswith("key-") and "sk-transparent-test" not in name


def test_without_a_host_header_the_sni_names_the_provider(
    agent: Agent, fake: FakeProvider, module_dsn: str
) -> None:
    before = len(fake.requests)
    assert agent.call(key="sk-transparent-bare", bare=True, model="gpt-4o")["status"] == 200
    assert len(fake.requests) == before + 1 and "host" not in fake.requests[-1]["headers"]
    rows = wait_events(
        module_dsn,
        2,
        "agent_id IN (SELECT id FROM agents WHERE identity_kind = 'api_key') AND provider = %s"
        " AND host = %s AND endpoint = 'chat.completions' AND model = 'gpt-4o'",
        ("openai", HOST),
    )
    assert {r["direction"] for r in rows} >= {"request", "response"}


def test_the_kill_switch_refuses_the_namespace(
    agent: Agent, agent_net: AgentNet, fake: FakeProvider, module_dsn: str
) -> None:
    # no key, no header: the agent is its source address, the namespace's end of the veth
    aid = ids.agent_id("ip:" + agent_net.agent_ip)
    first = agent.call()
    assert first["status"] == 200, first
    name, kind, _, _ = wait_for(lambda: _agent_row(module_dsn, aid))
    assert (name, kind) == (agent_net.agent_ip, "source_ip")

    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("UPDATE agents SET status = 'blocked' WHERE id = %s", (aid,))
    # the proxy hears of it by LISTEN: wait for the refusal, not for a fixed time
    refused = wait_for(lambda: (a := agent.call())["status"] == 403 and a, timeout=10)
    assert refused["body"]["error"] == "agent_blocked" and refused["body"]["agent_id"] == aid
    before = len(fake.requests)
    again = agent.call()
    assert again["status"] == 403 and again["body"]["error"] == "agent_blocked"
    assert len(fake.requests) == before  # nothing reached the provider
    rows = wait_events(
        module_dsn, 2, "agent_id = %s AND status_code = 403 AND error = 'agent_blocked'", (aid,)
    )
    assert {r["provider"] for r in rows} == {"openai"}


# -- how the addon names the host of a transparent request (no root needed) -----------------------
# mitmproxy gives a transparent request the address the agent dialled as its host; the name comes
# from the Host header (:authority in HTTP/2), else from the TLS SNI, never from the address.


@pytest.mark.parametrize(
    ("headers", "authority", "sni", "host", "provider"),
    [
        ({"host": HOST}, "", None, HOST, "openai"),
        ({"host": HOST + ":443"}, "", HOST, HOST, "openai"),
        ({}, HOST, None, HOST, "openai"),  # HTTP/2: :authority
        ({}, "", HOST, HOST, "openai"),  # no Host header (HTTP/1.0): the SNI
        ({"host": PROVIDER_ADDRESS}, "", "api.groq.com", "api.groq.com", "groq"),
        ({"host": "api.groq.com"}, "", HOST, "api.groq.com", "groq"),  # the Host header first
        ({}, "", None, PROVIDER_ADDRESS, None),  # nothing names it: the address, another host
    ],
)
def test_a_transparent_request_is_named_by_host_then_sni(
    headers: dict[str, str], authority: str, sni: str | None, host: str, provider: str | None
) -> None:
    req = http.Request.make("POST", f"https://{PROVIDER_ADDRESS}/v1/chat/completions", b"{}")
    req.headers.pop("host", None)  # make() writes the address there; the agent did not
    req.headers.update(headers)
    if authority:
        req.http_version, req.authority = "HTTP/2.0", authority
    router = Router({})
    got_host, port, path = router.target(req, scan_headers(req.headers.fields)[0], sni)
    assert (got_host, port, path) == (host, 443, "/v1/chat/completions")
    found = router.detect(host_port(got_host, port), path)
    assert (found[0].name if found else None) == provider
