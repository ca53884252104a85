"""Proxy workers (issue 14): N lean proxies on one port through ``SO_REUSEPORT``, one truth.

What ``up`` plans for ``GOVRIX_PROXY_WORKERS`` (names, ports, environments), then two real
``python -m addon.lean`` workers on the same port in front of the fake provider: the kernel
spreads new connections over both, every call is recorded once, one session's events written
by both verify as one chain, and a kill switch flipped in PostgreSQL is applied by both.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from addon import ids
from scripts import plan, stack
from tests.apiutil import AUTH, live_server
from tests.fakeprovider import FakeProvider
from tests.proxyharness import Proxy, wait_events, wait_for

URL = "https://api.openai.com/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (4, 2), (8, 4), (64, 8)])
def test_default_worker_count_follows_the_cores(cores: int, expected: int) -> None:
    assert plan.default_workers(cores) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_worker_count_is_refused(raw: str) -> None:
    with pytest.raises(SystemExit, match="GOVRIX_PROXY_WORKERS"):
        plan.workers({"GOVRIX_PROXY_WORKERS": raw})


def test_three_workers_share_the_port_with_their_own_metrics_spool_and_pid() -> None:
    env = {"GOVRIX_PROXY_WORKERS": "3", "GOVRIX_PROXY_METRICS_PORT": "5002"}
    args = stack.parser().parse_args(["up"])
    names = [name for name, _ in plan.children(args, env)]
    assert names == ["api", "proxy", "proxy-2", "proxy-3"]
    cmds = dict(plan.children(args, env))
    assert cmds["proxy"] == cmds["proxy-2"] == cmds["proxy-3"]  # one command line, one port
    assert plan.worker_env(1, 3, env) == {
        "GOVRIX_PROXY_WORKER": "1",
        "GOVRIX_PROXY_REUSE_PORT": "1",
        "GOVRIX_PROXY_METRICS_PORT": "5002",
    }
    assert plan.worker_env(3, 3, env)["GOVRIX_PROXY_METRICS_PORT"] == "5004"
    assert plan.worker_env(1, 1, env) == {}  # one worker: exactly what `up` ran before
    metrics = [p.port for p in plan.planned_ports(args, env) if p.role == "proxy metrics"]
    assert metrics == [5002, 5003, 5004]
    assert plan.metrics_urls(env) == [f"http://127.0.0.1:{p}/metrics" for p in metrics]
    off = env | {"GOVRIX_PROXY_METRICS_PORT": "0"}
    assert (
        plan.metrics_urls(off) == []
        and plan.worker_env(2, 3, off)["GOVRIX_PROXY_METRICS_PORT"] == "0"
    )


def test_each_worker_has_its_own_spool_and_pid_file(tmp_path: Path) -> None:
    from addon.config import ConfigError, load

    base = {"GOVRIX_HOME": str(tmp_path), "GOVRIX_DATABASE_URL": "postgresql://x/y"}
    one, two = load(base), load(base | {"GOVRIX_PROXY_WORKER": "2"})
    assert one.spool_dir == tmp_path / "spool" and one.pid_file == tmp_path / "proxy.pid"
    assert two.spool_dir == tmp_path / "spool-2" and two.pid_file == tmp_path / "proxy-2.pid"
    assert one.identity_secret == two.identity_secret  # shared: the same agent ids everywhere
    with pytest.raises(ConfigError, match="GOVRIX_PROXY_WORKER"):
        load(base | {"GOVRIX_PROXY_WORKER": "0"})


# -- two workers on one port ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(
    module_dsn: str, fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[tuple[Proxy, int]]]:
    home = tmp_path_factory.mktemp("workers")
    port = _free_port()
    started: list[tuple[Proxy, int]] = []
    try:
        for i in (1, 2):
            mp = _free_port()
            env = {
                "GOVRIX_PROXY_WORKER": str(i),
                "GOVRIX_PROXY_REUSE_PORT": "1",
                "GOVRIX_PROXY_METRICS_PORT": str(mp),
            }
            p = Proxy(module_dsn, home, fake, env=env, lean=True, port=port)
            p.log = home / f"worker-{i}.log"
            started.append((p.start(), mp))
        yield started
    finally:
        for p, _ in started:
            p.stop()


def _client(proxy: Proxy, name: str) -> httpx.Client:
    """A new client, so a new connection: the kernel picks the worker for each."""
    return httpx.Client(
        proxy=f"http://{name}:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context(), timeout=30
    )


def _forwarded(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "govrix_proxy_requests_total" and s.labels.get("outcome") == "forwarded"
    )


def test_connections_spread_over_both_workers_and_every_call_is_recorded_once(
    workers: list[tuple[Proxy, int]], module_dsn: str
) -> None:
    name = "spread"
    proxy = workers[0][0]
    calls = 40
    for _ in range(calls):
        with _client(proxy, name) as http:
            assert http.post(URL, json=BODY).status_code == 200
    per_worker = [_forwarded(mp) for _, mp in workers]
    assert sum(per_worker) == calls, per_worker
    assert all(n > 0 for n in per_worker), per_worker  # 2**-39 to fail by chance
    aid = ids.agent_id("name:" + name)
    rows = wait_events(module_dsn, 2 * calls, "agent_id = %s", (aid,), timeout=30)
    assert len(rows) == 2 * calls
    assert len({r["id"] for r in rows}) == 2 * calls

    # one agent, one session, written by two recorders: the chain forks and still verifies
    sessions = {r["session_id"] for r in rows}
    with live_server(module_dsn) as srv:
        for sid in sessions:
            v = httpx.get(f"{srv.url}/api/v1/sessions/{sid}/verify", headers=AUTH).json()
            assert v["valid"] is True, v


def test_the_kill_switch_is_applied_by_every_worker_within_a_second(
    workers: list[tuple[Proxy, int]], module_dsn: str
) -> None:
    name = "rogue-worker"
    proxy = workers[0][0]
    aid = ids.agent_id("name:" + name)
    with _client(proxy, name) as http:
        assert http.post(URL, json=BODY).status_code == 200
    wait_for(lambda: _agent_exists(module_dsn, aid))

    def refused() -> bool:
        with _client(proxy, name) as http:
            try:
                return http.post(URL, json=BODY).status_code == 403
            except httpx.ProxyError as e:  # refused at CONNECT: the credentials name it
                return "403" in str(e)

    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("UPDATE agents SET status = 'blocked' WHERE id = %s", (aid,))
    flipped = time.monotonic()
    first_of_run: float | None = None
    run = 0
    deadline = flipped + 10
    while run < 20 and time.monotonic() < deadline:
        now = time.monotonic()
        if refused():
            first_of_run = now if run == 0 else first_of_run
            run += 1
        else:
            run = 0
    # 20 new connections in a row refused: both workers had applied it (2**-19 to miss one)
    assert run == 20, "the block was not applied by every worker within 10 s"
    assert first_of_run is not None and first_of_run - flipped <= 1.0, first_of_run - flipped


def _agent_exists(dsn: str, aid: str) -> Any:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM agents WHERE id = %s", (aid,)).fetchone()
