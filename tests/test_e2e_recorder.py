"""End to end: the recorder process beside mitmdump (addon/recorder.py, addon/channel.py).

The hot path hands captures to a child process; these tests check that it really is a separate
process, that its metrics reach the proxy's scrape endpoint, that killing it loses no traffic
(the proxy starts another, or records in-process if they keep dying, and says how many captures
were lost), and that ``GOVRIX_RECORDER=inline`` records the same events without a child.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.fakeprovider import FakeProvider, free_port
from tests.proxyharness import Proxy, wait_events, wait_for
from tests.test_e2e_proxy import agent_id, client, pair

pytestmark = pytest.mark.e2e

URL = "https://api.openai.com/v1/chat/completions"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "write to jane@example.com"}]}


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def recorders(proxy: Proxy) -> list[int]:
    assert proxy.proc is not None
    return [
        c for c in children(proxy.proc.pid)
        if b"addon.recorder" in Path(f"/proc/{c}/cmdline").read_bytes()
    ]


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in an exposition (labels in any order), None when absent."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


def scrape_once_written(port: int, events: int) -> str:
    """The exposition, once the recorder's writer reports ``events`` written (it reports every
    second)."""
    return str(wait_for(
        lambda: t
        if (sample(t := scrape(port), "govrix_writer_written_total") or 0) >= events
        else None
    ))


def with_recorder(dsn: str, home: Path, fake: FakeProvider) -> tuple[Proxy, int, int]:
    """A started proxy serving metrics, its metrics port, and its recorder child's pid."""
    mport = free_port()
    proxy = Proxy(dsn, home, fake, env={"GOVRIX_PROXY_METRICS_PORT": str(mport)}).start()
    try:
        (child,) = wait_for(lambda: recorders(proxy))
    except BaseException:
        proxy.stop()
        raise
    return proxy, mport, child


def test_recorder_is_a_child_process_and_its_metrics_are_scraped_with_ours(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
    proxy, mport, child = with_recorder(module_dsn, tmp_path, fake)
    try:
        # it steps back for the proxy: a batch task at niceness 10 (GOVRIX_RECORDER_NICE)
        wait_for(lambda: os.sched_getscheduler(child) == os.SCHED_BATCH)
        assert os.getpriority(os.PRIO_PROCESS, child) == 10
        with client(proxy, "metrics-agent") as http:
            for _ in range(3):
                assert http.post(URL, json=BODY).status_code == 200
        rows = wait_events(module_dsn, 6, "agent_id = %s", (agent_id("metrics-agent"),))
        assert all(r["pii_types"] == ["email"] for r in rows if r["direction"] == "request")
        # the recorder reports once a second; the proxy serves both sides under one name each
        text = scrape_once_written(mport, 6)
        assert sample(text, "govrix_proxy_requests_total", provider="openai", outcome="forwarded") == 3
        assert sample(text, "govrix_proxy_events_total", direction="response") == 3
        assert sample(text, "govrix_proxy_upstream_latency_seconds_count", provider="openai") == 3
        assert sample(text, "govrix_recorder_lost_total") == 0
        assert text.count("# TYPE govrix_proxy_events_total ") == 1
    finally:
        proxy.stop()
    assert not recorders(proxy)


def test_killed_recorder_is_replaced_and_loses_no_later_traffic(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
    proxy, mport, child = with_recorder(module_dsn, tmp_path, fake)
    try:
        with client(proxy, "before-kill") as http:
            assert http.post(URL, json=BODY).status_code == 200
        pair(wait_events(module_dsn, 2, "agent_id = %s", (agent_id("before-kill"),)))
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: "recorder process died" in proxy.output())
        (successor,) = wait_for(lambda: [c for c in recorders(proxy) if c != child])
        with client(proxy, "after-kill") as http:
            for _ in range(5):
                assert http.post(URL, json=BODY).status_code == 200
        rows = wait_events(module_dsn, 10, "agent_id = %s", (agent_id("after-kill"),))
        assert sum(r["direction"] == "response" for r in rows) == 5
        assert all(r["pii_types"] == ["email"] for r in rows if r["direction"] == "request")
        assert recorders(proxy) == [successor]
        text = scrape_once_written(mport, 10)  # the successor's metrics are served too
        assert sample(text, "govrix_recorder_lost_total") == 0  # the first had handled all
    finally:
        proxy.stop()


def test_recorders_that_keep_dying_leave_recording_in_the_proxy(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
    from addon.proxy import MAX_RESPAWNS

    proxy = Proxy(module_dsn, tmp_path, fake).start()
    try:
        killed: set[int] = set()
        for _ in range(MAX_RESPAWNS + 1):
            (child,) = wait_for(lambda: [c for c in recorders(proxy) if c not in killed])
            os.kill(child, signal.SIGKILL)
            killed.add(child)
        wait_for(lambda: "recording in the proxy process" in proxy.output())
        assert not [c for c in recorders(proxy) if c not in killed]
        with client(proxy, "after-many-kills") as http:
            for _ in range(3):
                assert http.post(URL, json=BODY).status_code == 200
        rows = wait_events(module_dsn, 6, "agent_id = %s", (agent_id("after-many-kills"),))
        assert all(r["pii_types"] == ["email"] for r in rows if r["direction"] == "request")
    finally:
        proxy.stop()


def test_inline_recorder_records_the_same(module_dsn: str, fake: FakeProvider, tmp_path: Path) -> None:
    proxy = Proxy(module_dsn, tmp_path, fake, env={"GOVRIX_RECORDER": "inline"}).start()
    try:
        assert not recorders(proxy)
        with client(proxy, "inline-agent") as http:
            r = http.post(URL, json=BODY | {"stream": True})
            assert r.status_code == 200 and b"data:" in r.content
        req, resp = pair(wait_events(module_dsn, 2, "agent_id = %s", (agent_id("inline-agent"),)))
    finally:
        proxy.stop()
    assert req["pii_types"] == ["email"] and req["model"] == "gpt-4o"
    assert resp["usage_source"] == "reported" and resp["completion_tokens"] and resp["cost_usd"]


def test_a_request_to_an_address_is_named_by_its_host_header(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
    """Transparent mode sees addresses: the Host header says which configured provider it is."""
    env = {"GOVRIX_OPENAI_COMPATIBLE_HOSTS": "llm.internal=vllm"}
    proxy = Proxy(module_dsn, tmp_path, fake, env=env).start()
    try:
        target = f"{fake.url}/v1/chat/completions"
        with client(proxy, "by-host-header") as http:
            named = http.post(target, json=BODY, headers={"Host": f"llm.internal:{fake.port}"})
            assert named.status_code == 200
            assert http.post(target, json=BODY).status_code == 200  # 127.0.0.1: not configured
            assert http.post(target, json=BODY, headers={"Host": "other.internal"}).status_code == 200
        rows = wait_events(module_dsn, 2, "agent_id = %s", (agent_id("by-host-header"),))
        req, resp = pair(rows)
        assert req["provider"] == resp["provider"] == "vllm" and req["model"] == "gpt-4o"
    finally:
        proxy.stop()  # drains the recorder: nothing else from this agent can still arrive
    assert len(wait_events(module_dsn, 2, "agent_id = %s", (agent_id("by-host-header"),))) == 2


def test_recorder_niceness_is_checked(tmp_path: Path) -> None:
    from addon import config

    home = {"GOVRIX_HOME": str(tmp_path)}
    assert config.load(home).recorder_nice == 10
    assert config.load(home | {"GOVRIX_RECORDER_NICE": "0"}).recorder_nice == 0
    for bad in ("20", "-1", "2.5", "x"):
        with pytest.raises(config.ConfigError, match="GOVRIX_RECORDER_NICE"):
            config.load(home | {"GOVRIX_RECORDER_NICE": bad})
