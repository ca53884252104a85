"""Many instances, one truth (issue 14): two proxies on two "hosts" (own homes, ports, spools;
a shared identity secret) and two API instances on one PostgreSQL.

- A call through either proxy reaches the live stream of either API (each API listens to
  PostgreSQL itself), and the chains written by both proxies verify on the other API.
- The kill switch flipped through one API is applied by both proxies within a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from addon import ids
from tests.apiutil import AUTH, LiveServer, live_server
from tests.fakeprovider import FakeProvider
from tests.proxyharness import Proxy, wait_events, wait_for

pytestmark = pytest.mark.e2e
URL = "https://api.openai.com/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
SECRET = "shared-identity-secret-for-both-hosts"


@pytest.fixture(scope="module")
def proxies(
    module_dsn: str, fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    try:
        for host in ("host-a", "host-b"):
            p = Proxy(
                module_dsn,
                tmp_path_factory.mktemp(host),
                fake,
                env={"GOVRIX_IDENTITY_SECRET": SECRET},
                lean=True,
            )
            started.append(p.start())
        yield started
    finally:
        for p in started:
            p.stop()


@pytest.fixture(scope="module")
def apis(module_dsn: str) -> Iterator[list[LiveServer]]:
    # keepalives every 0.3 s: a stream reader notices it is asked to stop
    with (
        live_server(module_dsn, keepalive_interval=0.3) as one,
        live_server(module_dsn, keepalive_interval=0.3) as two,
    ):
        yield [one, two]


def _call(proxy: Proxy, name: str) -> int:
    with httpx.Client(
        proxy=f"http://{name}:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context(), timeout=30
    ) as http:
        try:
            return http.post(URL, json=BODY).status_code
        except httpx.ProxyError as e:  # refused at CONNECT: the tunnel's credentials name it
            return 403 if "403" in str(e) else 502


class _Stream(threading.Thread):
    """Collects the ids of ``agent_event`` messages of one API's live stream for one agent."""

    def __init__(self, api: LiveServer, agent_id: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{api.url}/api/v1/events/stream"
        self.agent_id = agent_id
        self.ids: list[str] = []
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        params = {"agent_id": self.agent_id}
        with (
            httpx.Client(headers=AUTH, timeout=30) as c,
            c.stream("GET", self.url, params=params) as r,
        ):
            for line in r.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("id:"):
                    self.ids.append(line[3:].strip())


def test_calls_through_both_proxies_reach_both_apis_and_their_chains_verify(
    proxies: list[Proxy], apis: list[LiveServer], module_dsn: str
) -> None:
    name = "two-hosts"
    aid = ids.agent_id("name:" + name)
    assert _call(proxies[0], name) == 200  # registers the agent (the stream filters by it)
    wait_events(module_dsn, 2, "agent_id = %s", (aid,))
    streams = [_Stream(api, aid) for api in apis]
    for s in streams:
        s.start()
    try:
        for s in streams:
            assert s.connected.wait(10)
        for p in proxies * 2:
            assert _call(p, name) == 200
        rows = wait_events(module_dsn, 10, "agent_id = %s", (aid,), timeout=30)
        new = {r["id"] for r in rows} - {r["id"] for r in rows[:2]}
        # each API, listening for itself, streams what both proxies recorded
        for s in streams:
            wait_for(lambda s=s: new <= set(s.ids), timeout=10)
    finally:
        for s in streams:
            s.stop.set()
        for s in streams:
            s.join(5)
    for sid in {r["session_id"] for r in rows}:
        for api in apis:
            v = httpx.get(f"{api.url}/api/v1/sessions/{sid}/verify", headers=AUTH).json()
            assert v["valid"] is True, v


def test_a_block_through_one_api_is_applied_by_both_proxies_within_a_second(
    proxies: list[Proxy], apis: list[LiveServer], module_dsn: str
) -> None:
    name = "two-hosts-rogue"
    aid = ids.agent_id("name:" + name)
    for p in proxies:
        assert _call(p, name) == 200
    wait_events(module_dsn, 4, "agent_id = %s", (aid,))
    r = httpx.put(
        f"{apis[0].url}/api/v1/agents/{aid}",
        json={"status": "blocked", "metadata": {"reason": "test: two hosts"}},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    flipped = time.monotonic()
    took: dict[int, float] = {}
    deadline = flipped + 10
    while len(took) < len(proxies) and time.monotonic() < deadline:
        for i, p in enumerate(proxies):
            if i not in took and _call(p, name) == 403:
                took[i] = time.monotonic() - flipped
    assert len(took) == len(proxies), f"not applied by every proxy within 10 s: {took}"
    assert max(took.values()) <= 1.0, took
    # and the other API says so too
    got: Any = httpx.get(f"{apis[1].url}/api/v1/agents/{aid}", headers=AUTH).json()
    assert got["status"] == "blocked" and got["metadata"]["reason"] == "test: two hosts"
