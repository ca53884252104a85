"""Many instances, one truth (issue 14): two proxies on two "hosts" (own homes, ports, spools;
a shared identity secret) and two API instances on one PostgreSQL.

- A call through either proxy reaches the live stream of either API (each API listens to
  PostgreSQL itself), and the chains written by both proxies verify on the other API.
- The kill switch flipped through one API is applied by both proxies within a second.
- A budget shared by both proxies is overshot by at most one call per proxy (leases of budget
  chunks, ``addon/budgets/leases.py``), under a burst split between them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
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


# -- a shared budget ----------------------------------------------------------------------------


def _priced_call(proxy: Proxy, name: str, usage: tuple[int, int]) -> int:
    with httpx.Client(
        proxy=f"http://{name}:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context(), timeout=60
    ) as http:
        body = BODY | {"max_tokens": 50}
        r = http.post(URL, json=body, headers={"x-fake-usage": f"{usage[0]},{usage[1]}"})
        return r.status_code


def test_a_budget_shared_by_both_proxies_is_overshot_by_one_call_each_at_most(
    proxies: list[Proxy], module_dsn: str
) -> None:
    name = "two-hosts-budget"
    aid = ids.agent_id("name:" + name)
    per_call = 60  # what the fake provider reports; each call is reserved at several times more
    limit = 6 * per_call
    with psycopg.connect(module_dsn, autocommit=True) as db:
        row = db.execute(
            "INSERT INTO budgets (scope, agent_id, period, metric, limit_value) "
            "VALUES ('agent', %s, 'daily', 'tokens', 0) RETURNING id",
            (aid,),
        ).fetchone()
        assert row is not None
        for p in proxies:  # both have it (a limit of 0 refuses at once)...
            wait_for(lambda p=p: _priced_call(p, name, (0, 0)) == 429, timeout=10, interval=0.02)
        db.execute("UPDATE budgets SET limit_value = %s WHERE id = %s", (limit, row[0]))
        for p in proxies:  # ...and its new limit (a call that costs nothing is admitted)
            wait_for(lambda p=p: _priced_call(p, name, (0, 0)) == 200, timeout=10, interval=0.02)

        codes: list[int] = []
        lock = threading.Lock()
        barrier = threading.Barrier(24)

        def one(p: Proxy) -> None:
            barrier.wait(30)
            code = _priced_call(p, name, (per_call - 10, 10))
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=one, args=(proxies[i % 2],)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ok = codes.count(200)
        assert ok + codes.count(429) == 24, sorted(set(codes))

        def spent() -> int | None:
            r = db.execute(
                "SELECT tokens FROM budget_usage WHERE usage_key = %s", ("agent:" + aid,)
            ).fetchone()
            return int(r[0]) if r is not None and int(r[0]) == ok * per_call else None

        total = wait_for(spent, timeout=10)
    assert ok >= 0.8 * (limit // per_call)
    assert total <= limit + len(proxies) * per_call  # one call per proxy instance at most
