"""Governance through the real proxy: budgets, policies, fail modes, database outages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from addon import ids
from tests.fakeprovider import PROMPT_TOKENS, FakeProvider, free_port
from tests.proxyharness import Proxy, wait_events, wait_for

pytestmark = pytest.mark.e2e
URL = "https://api.openai.com/v1/chat/completions"


@pytest.fixture
def make_proxy(
    module_dsn: str, fake: FakeProvider, tmp_path: Path
) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def make(env: dict[str, str] | None = None, dsn: str | None = None) -> Proxy:
        p = Proxy(dsn or module_dsn, tmp_path / f"home{len(started)}", fake, env=env).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def agent_id(name: str) -> str:
    return ids.agent_id("name:" + name)


def sql(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def budgets_loaded(make_proxy: Callable[..., Proxy]) -> Proxy:
    """A proxy whose budget table has been read (its ``govrix_budgets_loaded`` gauge is 1)."""
    port = free_port()
    proxy = make_proxy({"GOVRIX_PROXY_METRICS_PORT": str(port)})

    def loaded() -> bool:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return any(line.startswith("govrix_budgets_loaded 1") for line in text.splitlines())

    wait_for(loaded)
    return proxy


def body(content: str = "x" * (PROMPT_TOKENS * 4), max_tokens: int | None = 7) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    return out


# -- budgets ----------------------------------------------------------------------------------------------


def test_concurrent_requests_cannot_overshoot_a_budget(
    make_proxy: Callable[..., Proxy], module_dsn: str
) -> None:
    name = "budgeted-agent"
    per_call = PROMPT_TOKENS + 7  # what the fake reports for each call
    sql(
        module_dsn,
        "INSERT INTO budgets (scope, agent_id, period, metric, limit_value) VALUES ('agent', %s, 'daily', 'tokens', %s)",
        (agent_id(name), per_call * 10),
    )
    proxy = budgets_loaded(make_proxy)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            proxy=f"http://{name}:x@127.0.0.1:{proxy.port}",
            verify=proxy.ssl_context(),
            timeout=30,
            limits=httpx.Limits(max_connections=50),
        ) as http:
            return list(await asyncio.gather(*(http.post(URL, json=body()) for _ in range(50))))

    responses = asyncio.run(fire())
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(limited) == 50, [r.status_code for r in responses]
    assert 10 <= len(ok) <= 11, f"{len(ok)} forwarded for a budget with room for 10"
    for r in limited:
        assert int(r.headers["retry-after"]) >= 1
        data = r.json()
        assert data["error"] == "budget_exceeded" and data["agent_id"] == agent_id(name)
        assert data["budget"]["period"] == "daily" and data["budget"]["metric"] == "tokens"
        assert data["budget"]["limit"] == per_call * 10
    # the refused calls are recorded too
    refused = wait_events(
        module_dsn, len(limited), "agent_id = %s AND status_code = 429", (agent_id(name),)
    )
    assert all(r["error"] == "budget_exceeded" for r in refused)

    # usage survives a restart: a new proxy instance still refuses
    proxy.stop()
    wait_for(
        lambda: sql(
            module_dsn,
            "SELECT tokens FROM budget_usage WHERE usage_key = %s AND period = 'daily'",
            ("agent:" + agent_id(name),),
        )
    )
    proxy2 = budgets_loaded(make_proxy)
    with httpx.Client(
        proxy=f"http://{name}:x@127.0.0.1:{proxy2.port}", verify=proxy2.ssl_context()
    ) as http:
        assert http.post(URL, json=body()).status_code == 429


def test_global_usd_budget(make_proxy: Callable[..., Proxy], module_dsn: str) -> None:
    sql(module_dsn, "DELETE FROM budgets")
    sql(
        module_dsn,
        "INSERT INTO budgets (scope, period, metric, limit_value) VALUES ('global', 'monthly', 'usd', 0.000001)",
    )
    try:
        proxy = make_proxy()
        with httpx.Client(
            proxy=f"http://usd-agent:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
        ) as http:
            # the first call may be admitted (the budget is not reached yet); then it is
            r = wait_for(
                lambda: r if (r := http.post(URL, json=body())).status_code == 429 else None
            )
        budget = r.json()["budget"]
        assert {k: budget[k] for k in ("scope", "agent_id", "period", "metric", "limit")} == {
            "scope": "global",
            "agent_id": None,
            "period": "monthly",
            "metric": "usd",
            "limit": 0.000001,
        }
        assert budget["spent"] >= 0 and budget["reserved"] >= 0 and "used" not in budget
    finally:
        sql(module_dsn, "DELETE FROM budgets")


# -- policies ----------------------------------------------------------------------------------------------

POLICY = """
version: 1
rules:
  - name: no-big-models-for-interns
    when:
      - {field: agent_name, op: regex, value: "^intern-"}
      - {field: model, op: in, value: [gpt-4o]}
    action: block
    message: interns use gpt-4o-mini
  - name: redact-emails
    when:
      - {field: pii_types, op: contains, value: email}
      - {field: direction, op: eq, value: request}
    action: redact
  - name: tag-pii
    when:
      - {field: pii_detected, op: eq, value: true}
    action: tag
    tag: pii-seen
"""


def test_policy_block_redact_tag_and_reload(
    make_proxy: Callable[..., Proxy], fake: FakeProvider, module_dsn: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    proxy = make_proxy({"GOVRIX_POLICY_FILE": str(policy)})

    def call(agent: str, content: str, model: str = "gpt-4o") -> httpx.Response:
        with httpx.Client(
            proxy=f"http://{agent}:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
        ) as http:
            return http.post(
                URL, json={"model": model, "messages": [{"role": "user", "content": content}]}
            )

    r = call("intern-anna", "hello")
    assert r.status_code == 403
    assert r.json() == {
        "error": "policy_blocked",
        "message": "interns use gpt-4o-mini",
        "agent_id": agent_id("intern-anna"),
        "rule": "no-big-models-for-interns",
    }
    assert call("intern-anna", "hello", model="gpt-4o-mini").status_code == 200

    n_before = len(fake.requests)
    r = call("support-bot", "please email jane.roe@corp.example.com about it")
    assert r.status_code == 200
    forwarded = json.loads(fake.requests[n_before]["body"])["messages"][0]["content"]
    assert forwarded == "please email [REDACTED:email] about it"
    rows = wait_events(module_dsn, 2, "agent_id = %s", (agent_id("support-bot"),))
    req = next(r for r in rows if r["direction"] == "request")
    assert req["compliance_tag"] == "pii-seen" and req["pii_types"] == ["email"]
    assert req["pii_findings"] == [{"type": "email", "count": 1, "path": "$.messages[0].content"}]
    assert (
        req["policy_decisions"][0]["redact"] is True and req["policy_decisions"][0]["redacted"] == 1
    )
    assert "jane.roe" not in json.dumps(rows, default=str)

    # reload on change; a broken file keeps the previous rules
    policy.write_text(POLICY.replace("^intern-", "^contractor-"))
    wait_for(lambda: call("contractor-bo", "hi").status_code == 403, timeout=5)
    assert call("intern-anna", "hello").status_code == 200
    policy.write_text(
        "version: 1\nrules:\n  - name: broken\n    when: [{field: nope, op: eq, value: 1}]\n    action: block\n"
    )
    wait_for(lambda: "unknown field 'nope'" in proxy.output(), timeout=10)  # seen, and rejected
    assert call("contractor-bo", "hi").status_code == 403


def test_malformed_policy_file_refuses_to_start(
    make_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - name: x\n    when: [{field: model, op: bogus, value: 1}]\n    action: block\n"
    )
    with pytest.raises(
        RuntimeError, match=r"bad.yaml:4: rule 'x', condition #1: unknown operator 'bogus'"
    ):
        make_proxy({"GOVRIX_POLICY_FILE": str(policy)})


# -- availability -------------------------------------------------------------------------------------------


def test_killed_database_connections_do_not_stop_traffic(
    make_proxy: Callable[..., Proxy], module_dsn: str
) -> None:
    name = "resilient-agent"
    proxy = make_proxy()
    with httpx.Client(
        proxy=f"http://{name}:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
    ) as http:
        assert http.post(URL, json=body()).status_code == 200
        wait_for(
            lambda: sql(
                module_dsn,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'govrix-agents' "
                "AND datname = current_database()",
            )
        )
        # the agent must be registered before it can be blocked (the recorder registers it)
        wait_for(lambda: sql(module_dsn, "SELECT 1 FROM agents WHERE id = %s", (agent_id(name),)))
        killed = sql(
            module_dsn,
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name IN ('govrix-agents', 'govrix-writer', 'govrix-budgets')",
        )
        assert killed
        gone = [r[0] for r in killed]
        for _ in range(20):
            assert http.post(URL, json=body()).status_code == 200
        # the listener is back by itself (a new backend: a terminated one lingers for a moment),
        # and the kill switch works through it again
        wait_for(
            lambda: sql(
                module_dsn,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'govrix-agents' "
                "AND datname = current_database() AND state = 'idle' AND pid <> ALL(%s)",
                (gone,),
            ),
            timeout=10,
        )
        assert sql(
            module_dsn,
            "UPDATE agents SET status = 'blocked' WHERE id = %s RETURNING id",
            (agent_id(name),),
        )
        wait_for(lambda: http.post(URL, json=body()).status_code == 403, timeout=3)
    rows = wait_events(
        module_dsn, 43, "agent_id = %s", (agent_id(name),), timeout=15
    )  # 21 pairs + the 403
    assert len({r["id"] for r in rows}) == len(rows)


def test_fail_closed_refuses_without_the_agent_table(make_proxy: Callable[..., Proxy]) -> None:
    dead = "postgresql://govrix:x@127.0.0.1:1/none?connect_timeout=1"
    proxy = make_proxy({"GOVRIX_FAIL_MODE": "fail_closed"}, dsn=dead)
    with httpx.Client(
        proxy=f"http://closed-agent:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
    ) as http:
        r = http.post(URL, json=body())
    assert r.status_code == 503 and r.json()["error"] == "governance_unavailable"


def test_default_mode_serves_without_a_database(
    make_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    dead = "postgresql://govrix:x@127.0.0.1:1/none?connect_timeout=1"
    proxy = make_proxy(dsn=dead)
    with httpx.Client(
        proxy=f"http://open-agent:x@127.0.0.1:{proxy.port}", verify=proxy.ssl_context()
    ) as http:
        assert http.post(URL, json=body()).status_code == 200
    proxy.stop()
    spool = proxy.home / "spool" / "events.spool"
    assert spool.exists() and spool.stat().st_size > 0, (
        "events must be kept on disk while PostgreSQL is away"
    )
