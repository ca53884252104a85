"""End to end: the recorder process beside mitmdump (addon/recorder, addon/sinks).

The hot path hands captures to a child process; these tests check that it really is a separate
process, that its metrics reach the proxy's scrape endpoint, that killing it loses no traffic
and no event, even under load (the proxy keeps every capture until it is durable, starts another
recorder with what the dead one had not made durable, or records in-process if they keep dying),
that a proxy stopped or killed mid-call still records that call (aborted), and that
``GOVRIX_RECORDER=inline`` records the same events without a child.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from addon import lineage
from tests.fakeprovider import FakeProvider, free_port
from tests.proxyharness import Proxy, events, wait_events, wait_for
from tests.test_e2e_proxy import agent_id, client, pair

pytestmark = pytest.mark.e2e

URL = "https://api.openai.com/v1/chat/completions"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "write to jane@example.com"}]}


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    out: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in path.read_text().split()]
    return out


def _cmdline(pid: int) -> bytes:
    """The process's command line; empty when it exited meanwhile (a killed recorder)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def recorders(proxy: Proxy) -> list[int]:
    assert proxy.proc is not None
    return [c for c in children(proxy.proc.pid) if b"addon.recorder" in _cmdline(c)]


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
    return str(
        wait_for(
            lambda: (
                t
                if (sample(t := scrape(port), "govrix_writer_written_total") or 0) >= events
                else None
            )
        )
    )


def with_recorder(
    dsn: str, home: Path, fake: FakeProvider, env: dict[str, str] | None = None
) -> tuple[Proxy, int, int]:
    """A started proxy serving metrics, its metrics port, and its recorder child's pid."""
    mport = free_port()
    env = {"GOVRIX_PROXY_METRICS_PORT": str(mport)} | (env or {})
    proxy = Proxy(dsn, home, fake, env=env).start()
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
        assert (
            sample(text, "govrix_proxy_requests_total", provider="openai", outcome="forwarded") == 3
        )
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


def test_a_recorder_killed_under_16_concurrent_clients_loses_no_event(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
    """The proxy keeps every capture until the recorder says it is durable; a successor is sent
    the rest. Passes whether the proxy chooses the response event's id (``End.response_id``:
    exactly one response event per call) or the recorder does (a call whose response was stored
    but not yet acknowledged may get a second response event; both name the same request)."""
    clients, calls = 16, 40
    proxy, mport, child = with_recorder(
        module_dsn, tmp_path, fake, env={"GOVRIX_RECORDER": "process"}
    )
    names = [f"load-{n}" for n in range(clients)]
    ids = [agent_id(name) for name in names]
    completed = [0] * clients

    def agent(n: int) -> list[int]:
        statuses = []
        with client(proxy, names[n]) as http:
            for i in range(calls):
                streamed = i % 2 == 1  # half streamed: some are mid-stream at the kill
                r = http.post(
                    URL,
                    json=BODY | {"stream": streamed},
                    headers={"x-fake-chunks": "4", "x-fake-delay-ms": "2"},
                )
                statuses.append(r.status_code)
                completed[n] += 1
        return statuses

    def story() -> tuple[list[dict[str, Any]], set[str], set[str]]:
        rows = events(module_dsn, "agent_id = ANY(%s)", (ids,))
        requests = {r["id"] for r in rows if r["direction"] == "request"}
        answered = {r["parent_id"] for r in rows if r["direction"] == "response"}
        return rows, requests, answered

    try:
        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(agent, n) for n in range(clients)]
            wait_for(lambda: sum(completed) >= clients * calls // 3, timeout=60)
            # mid-load: captures in the pipe, in its memory, in its writer's buffer, in a COPY
            # not committed yet
            os.kill(child, signal.SIGKILL)
            statuses = [f.result(timeout=120) for f in futures]
        assert statuses == [[200] * calls] * clients  # traffic never noticed
        assert wait_for(lambda: [c for c in recorders(proxy) if c != child])
        try:
            wait_for(lambda: (s := story())[1] == s[2] and len(s[1]) == clients * calls, timeout=60)
        except AssertionError:
            _, requests, answered = story()
            raise AssertionError(
                f"{clients * calls} calls: {len(requests)} request events, "
                f"{len(requests - answered)} of them without a response event"
            ) from None
        rows, requests, _ = story()
        # the kill really caught calls in flight, and they went to the successor
        m = re.search(r"(\d+) captures of (\d+) calls it had not made durable", proxy.output())
        assert m and int(m.group(2)) > 0, proxy.output()[-2000:]
        responses = sum(r["direction"] == "response" for r in rows)
        print(f"kill story: {m.group(0)}; {responses} response events for {len(requests)} calls")
        text = scrape_once_written(mport, 1)
        assert sample(text, "govrix_recorder_lost_total") == 0
        # a resent call forks the chain; no event points at a row that was never stored
        with psycopg.connect(module_dsn) as conn:
            heads = {
                sid: (seq, head)
                for sid, seq, head in conn.execute(
                    "SELECT id, head_seq, head_hash FROM sessions WHERE agent_id = ANY(%s)", (ids,)
                )
            }
        for sid in {r["session_id"] for r in rows}:
            verdict = lineage.verify(sid, [r for r in rows if r["session_id"] == sid], heads[sid])
            assert verdict.valid, verdict
    finally:
        proxy.stop()


def gone(pid: int) -> bool:
    """The process has exited (a zombie that nobody reaped yet counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_stopped_or_killed_proxy_records_its_calls_in_flight_as_aborted(
    sig: signal.Signals, module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
    """SIGTERM: the proxy hands over and waits for its recorder to make everything durable.
    SIGKILL: its recorder sees the end of its input, records what reached it, drains its writer
    and exits; only captures that had not reached it yet (the last ~10 ms) could be lost. Either
    way a call still streaming is recorded as aborted, with what was streamed so far."""
    agent = f"in-flight-{sig.name}"
    proxy, _, child = with_recorder(module_dsn, tmp_path, fake)
    try:
        with client(proxy, f"before-{sig.name}") as http:
            for _ in range(3):
                assert http.post(URL, json=BODY).status_code == 200
        outcome: list[BaseException] = []

        def stream() -> None:
            try:
                with client(proxy, agent) as http:
                    http.post(
                        URL,
                        json=BODY | {"stream": True},
                        headers={
                            "x-fake-id": agent,
                            "x-fake-chunks": "200",
                            "x-fake-delay-ms": "50",
                        },
                    )
            except httpx.HTTPError as e:
                outcome.append(e)

        t = threading.Thread(target=stream)
        t.start()
        wait_for(lambda: len(fake.sent.get(agent, [])) >= 3)
        assert proxy.proc is not None
        proxy.proc.send_signal(sig)
        proxy.proc.wait(30)
        t.join(30)
        assert outcome  # the client saw the proxy go
        wait_for(lambda: gone(child), timeout=30)
        before = agent_id(f"before-{sig.name}")
        assert len(wait_events(module_dsn, 6, "agent_id = %s", (before,))) == 6
        req, resp = pair(wait_events(module_dsn, 2, "agent_id = %s", (agent_id(agent),)))
        assert req["model"] == "gpt-4o" and resp["parent_id"] == req["id"]
        assert resp["error"].startswith("aborted") and resp["status_code"] in (None, 200)
        if sig == signal.SIGTERM:  # nothing it had was left behind
            assert "at shutdown" not in proxy.output(), proxy.output()[-2000:]
    finally:
        proxy.stop()
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_recorders_that_keep_dying_leave_recording_in_the_proxy(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
    from addon.supervisor import MAX_RESPAWNS

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


def test_inline_recorder_records_the_same(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> None:
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
            assert (
                http.post(target, json=BODY, headers={"Host": "other.internal"}).status_code == 200
            )
        llm = "agent_id = %s AND provider <> 'other'"
        rows = wait_events(module_dsn, 2, llm, (agent_id("by-host-header"),))
        req, resp = pair(rows)
        assert req["provider"] == resp["provider"] == "vllm" and req["model"] == "gpt-4o"
    finally:
        proxy.stop()  # drains the recorder: nothing else from this agent can still arrive
    assert len(wait_events(module_dsn, 2, llm, (agent_id("by-host-header"),))) == 2
    # the two others are egress to hosts that are no provider: metadata only
    other = events(
        module_dsn, "agent_id = %s AND provider = 'other'", (agent_id("by-host-header"),)
    )
    assert len(other) == 4


def test_recorder_niceness_is_checked(tmp_path: Path) -> None:
    from addon import config

    home = {"GOVRIX_HOME": str(tmp_path)}
    assert config.load(home).recorder_nice == 10
    assert config.load(home | {"GOVRIX_RECORDER_NICE": "0"}).recorder_nice == 0
    for bad in ("20", "-1", "2.5", "x"):
        with pytest.raises(config.ConfigError, match="GOVRIX_RECORDER_NICE"):
            config.load(home | {"GOVRIX_RECORDER_NICE": bad})
