"""The console in a real browser: Debian's chromium driven by Playwright against the real stack.

One stack per module: PostgreSQL (``module_dsn``), the fake provider, mitmdump with our addon in
front of it, and the API with the console (uvicorn on loopback). One chromium per module, a fresh
context (no cookie, no cache) per test. What the operator does in the page is checked where it
matters, at the proxy: a block typed in the agent's page refuses the agent's next call within a
second, a budget set on /budgets refuses it with 429, a key revoked on /keys stops authenticating.

The module seeds a small, plausible fleet first (agents, sessions, tool calls scored by the
proxy, a blocked agent, budgets, a policy, scoring keys and scores: ``seed``). With ``GOVRIX_SCREENSHOTS=1``
(``scripts/govrix screenshots``) the page tour saves the README's screenshots into
docs/screenshots/ (1280x800); without it nothing is written.

Skipped, with the reason, when Playwright or /usr/bin/chromium is missing (.ci/run installs
Debian's chromium). Playwright never downloads a browser: see tests/browserutil.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from tests import browserutil
from tests.apiutil import AUTH, KEY, LiveServer
from tests.browserutil import Agent, first_status, shoot
from tests.fakeprovider import FakeProvider, free_port
from tests.proxyharness import Proxy, wait_events, wait_for

_why = browserutil.missing()
if _why:
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.e2e
POLICY = """version: 1
rules:
  - name: no-legacy-models
    when: [{field: model, op: eq, value: gpt-3.5-turbo}]
    action: block
    message: gpt-3.5-turbo is retired here; use gpt-4o-mini
  - name: stop-risky-mcp-calls
    when:
      - {field: tool_name, op: regex, value: "."}
      - {field: risk_level, op: gte, value: high}
    action: block
    message: this tool call is too risky to run unattended
"""
TICKETS = ("ticket-4411", "ticket-4412", "ticket-4415")


@dataclass
class Stack:
    dsn: str
    fake_url: str
    proxy: Proxy
    api: LiveServer
    http: httpx.Client  # the JSON API with the key
    metrics_url: str  # the proxy's
    agents: list[Agent] = field(default_factory=list)
    seeded: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.api.url

    def agent(self, name: str, session: str | None = None) -> Agent:
        a = Agent(self.proxy, name, session)
        self.agents.append(a)
        return a

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def stack(
    module_dsn: str, fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # The recorder at an ordinary priority: niced (the default) it only runs when a core is
    # idle, and the Live page and the kill switch are timed here on a machine shared with others.
    # The fake provider is an MCP server too (/mcp); the API scrapes the proxy's metrics for the
    # Overview's proxy health.
    metrics = free_port()
    env = {
        "GOVRIX_RECORDER_NICE": "0",
        "GOVRIX_PROXY_METRICS_PORT": str(metrics),
        "GOVRIX_MCP_SERVERS": f"127.0.0.1:{fake.port}=github-mcp",
    }
    proxy = Proxy(module_dsn, tmp_path_factory.mktemp("browser-proxy"), fake, env=env)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOVRIX_PROXY_METRICS_URLS", f"http://127.0.0.1:{metrics}/metrics")
        api = LiveServer(module_dsn)
    s: Stack | None = None
    try:
        with ThreadPoolExecutor(1) as pool:  # mitmdump starts while uvicorn does
            starting = pool.submit(proxy.start)
            try:
                api.start()
            finally:
                starting.result()
        with httpx.Client(base_url=api.url, headers=AUTH, timeout=30) as http:
            s = Stack(module_dsn, fake.url, proxy, api, http, f"http://127.0.0.1:{metrics}/metrics")
            seed(s)
            yield s
    finally:
        for a in s.agents if s else []:
            a.close()
        if api.thread.is_alive():
            api.stop()
        proxy.stop()


PROMPTS = [
    "Summarise ticket #4411: the customer cannot reset their password.",
    "Draft a polite reply to jane.doe@example.com about the delayed refund.",
    "Classify these five tickets by urgency.",
    "Translate the FAQ entry on invoices into German.",
]


def seed(s: Stack) -> None:
    """A fleet worth looking at: a policy, budgets, five agents and their sessions (LLM calls,
    MCP tool calls, tool calls scored by the proxy, refusals by the policy), one agent blocked
    with a reason, scoring keys (one revoked) and a day of a customer's scored actions. The
    agents call at once, one thread each, as a fleet would."""
    assert s.http.put("/api/v1/policies", json={"yaml": POLICY}).status_code == 201
    wait_for(lambda: "govrix_policy_version 1.0" in httpx.get(s.metrics_url).text)
    agents = {
        "support": [s.agent("support-bot", session=f"support-{t}") for t in TICKETS],
        "billing": [s.agent("billing-agent", session="billing-invoices-nov")],
        "research": [s.agent("research-assistant", session="research-vendor-review")],
        "reviewer": [s.agent("code-reviewer", session="review-pr-1287")],
        "pipeline": [s.agent("data-pipeline", session="nightly-export")],
    }

    for who, period, metric, limit in (
        ("billing", "daily", "tokens", 20_000),
        ("support", "daily", "tokens", 8_000),
        ("research", "monthly", "usd", 5),
    ):
        body = {"scope": "agent", "agent_id": agents[who][0].id, "period": period,
                "metric": metric, "limit": limit}  # fmt: skip
        r = s.http.post("/api/v1/budgets", json=body)
        assert r.status_code == 201, r.text

    def support() -> None:
        for n, a in enumerate(agents["support"]):
            for i in range(2 + n):
                assert a.chat(PROMPTS[(n + i) % 4], usage=(420 + 37 * i, 96)).status_code == 200

    def billing() -> None:
        (a,) = agents["billing"]
        for i in range(4):
            r = a.chat(f"Reconcile invoice INV-20{31 + i} against the ledger.", model="gpt-4o",
                       usage=(1800 + 150 * i, 310))  # fmt: skip
            assert r.status_code == 200

    def research() -> None:
        (a,) = agents["research"]
        assert a.claude("Compare the three vendors' SOC 2 reports.").status_code == 200
        for _ in range(2):  # drop_database + get_weather: scored by the proxy's recorder
            assert a.chat("Clean up the staging data.", headers={"x-fake-mode": "tools"},
                          model="gpt-4o").status_code == 200  # fmt: skip

    def reviewer() -> None:
        (a,) = agents["reviewer"]
        for model in ("gpt-4o", "gpt-4o-mini", "gpt-4o"):
            assert a.chat("Review this diff for SQL injection.", model=model).status_code == 200
        assert a.chat("Review this diff.", model="gpt-3.5-turbo").status_code == 403  # policy
        mcp = f"{s.fake_url}/mcp"
        for tool, args in (
            ("list_issues", {"repo": "acme/payments"}),
            ("get_file_contents", {"repo": "acme/payments", "path": "src/refunds.py"}),
            ("create_pull_request", {"repo": "acme/payments", "title": "Fix refund rounding"}),
        ):
            assert a.mcp(mcp, tool, args).status_code == 200
        r = a.mcp(mcp, "execute_shell_command", {"command": "rm -rf /srv/payments --force"})
        assert r.status_code == 200 and r.json()["error"]["code"] == -32001  # refused by policy

    def pipeline() -> None:
        (a,) = agents["pipeline"]
        assert a.chat("Export the customer table as CSV.").status_code == 200
        # The first events wait for the recorder to start (a child process: slow on a busy box).
        wait_for(lambda: s.http.get(f"/api/v1/agents/{a.id}").status_code == 200, timeout=60)
        r = s.http.put(
            f"/api/v1/agents/{a.id}",
            json={
                "status": "blocked",
                "metadata": {"team": "data", "reason": "sent customer emails to an unknown host"},
            },
        )
        assert r.status_code == 200, r.text

    with ThreadPoolExecutor(5) as pool:
        for f in [pool.submit(fn) for fn in (support, billing, research, reviewer, pipeline)]:
            f.result()
    by_role = {k: v[0].id for k, v in agents.items()}
    key = s.http.post("/api/v1/keys", json={"customer_id": "acme", "tier": "pro"})
    assert key.status_code == 201, key.text
    assert s.http.post(
        "/api/v1/keys", json={"customer_id": "initech", "tier": "enterprise"}
    ).is_success
    old = s.http.post("/api/v1/keys", json={"customer_id": "umbrella", "tier": "starter"})
    assert s.http.delete(f"/api/v1/keys/{old.json()['id']}").status_code == 200
    score_history(s, key.json()["key"], by_role)
    s.seeded.update(by_role, session=f"ses_support-{TICKETS[-1]}")
    # Two LLM answers with two tool calls each, four MCP calls: scored by the recorder.
    proxy_scores = "SELECT count(*) FROM scores WHERE customer_id = 'proxy'"
    wait_for(lambda: s.sql(proxy_scores)[0][0] >= 8, timeout=30)


#: What acme's agents did over the past day, scored through ``POST /events`` with acme's key.
ACTIONS = [
    ("support", "mcp:zendesk:ticket.read", {"resource_type": "ticket", "sensitivity_level": 1}),
    ("support", "mcp:email:message.send", {"resource_type": "mailbox", "sensitivity_level": 2}),
    ("billing", "db:billing:invoices.read", {"resource_type": "table", "sensitivity_level": 3}),
    ("billing", "http:stripe:refund.create", {"resource_type": "payment", "sensitivity_level": 3}),
    ("research", "fs:reports:file.read", {"resource_type": "file", "sensitivity_level": 1}),
    ("reviewer", "mcp:github:pr.create", {"resource_type": "repository", "sensitivity_level": 2}),
    ("pipeline", "db:customers:records.export", {"resource_type": "table", "sensitivity_level": 4}),
    ("pipeline", "sys:db:drop.execute", {"resource_type": "database", "sensitivity_level": 4}),
]


def score_history(s: Stack, key: str, agents: dict[str, str]) -> None:
    """A day of scored actions for the Risk page and the Overview's chart: real scores of the
    shipped rules, their ``scored_at`` spread over the last 22 hours afterwards (only scores:
    events are chained, their timestamps are part of the hash)."""
    events = []
    for i in range(40):
        who, action, target = ACTIONS[(i * 5) % len(ACTIONS)]
        events.append(
            {
                "event_id": f"acme-{i:03d}",
                "action": action,
                "agent": {"agent_id": agents[who], "framework": "langchain"},
                "target": target,
                "data_fields_accessed": ["email"] if "customers" in action else [],
            }
        )
    headers = {"X-API-Key": key}
    r = s.http.post("/events/batch", json={"events": events}, headers=headers)
    assert r.status_code == 202, r.text
    wait_for(lambda: s.sql("SELECT count(*) FROM scores WHERE customer_id = 'acme'")[0][0] == 40)
    s.sql(
        "UPDATE scores SET scored_at = now() - make_interval(mins => (substr(event_id, 6)::int"
        " * 33) %% 1320) WHERE customer_id = 'acme'"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = browserutil.launch(p)
        yield b
        b.close()


@dataclass
class Console:
    page: Page
    url: str
    errors: list[str]

    def goto(self, path: str) -> Any:
        return self.page.goto(self.url + path)


@pytest.fixture
def console(browser: Browser, stack: Stack) -> Iterator[Console]:
    """A fresh browser context, not logged in; fails the test on a script error or a console
    error (a CSP violation, a failed subresource)."""
    context = browser.new_context(viewport=browserutil.VIEWPORT, base_url=stack.url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield Console(page, stack.url, errors)
    finally:
        context.close()


@pytest.fixture(scope="module")
def session_cookie(stack: Stack) -> dict[str, Any]:
    """One login for the module (the form, as a browser posts it); each test's fresh context
    gets its cookie, so only the login test pays for the login page."""
    r = httpx.post(f"{stack.url}/login", data={"key": KEY, "next": "/agents"})
    assert r.status_code == 303, r.text
    token = r.cookies["govrix_session"]
    return {"name": "govrix_session", "value": token, "url": stack.url,
            "httpOnly": True, "sameSite": "Strict"}  # fmt: skip


@pytest.fixture
def operator(console: Console, session_cookie: dict[str, Any]) -> Console:
    """Logged in with the API key."""
    console.page.context.add_cookies([session_cookie])  # type: ignore[list-item]
    return console


def no_errors(c: Console, allowed: tuple[str, ...] = ()) -> None:
    left = [e for e in c.errors if not any(a in e for a in allowed)]
    assert not left, left


def not_built(c: Console, path: str) -> bool:
    """Open ``path``: True when it is still the placeholder of a page not built yet, or no
    console route at all (the API's JSON 404, not a console error page)."""
    r = c.goto(path)
    if c.page.get_by_test_id("not-built").count():
        return True
    return r is not None and r.status == 404 and "text/html" not in r.headers["content-type"]


def built(c: Console, path: str) -> None:
    """Open ``path``; a page that is missing (404) or still "not built" fails the test."""
    assert not not_built(c, path), f"page not built: {path}"


# -- (a) login -----------------------------------------------------------------------------------


def test_login_with_the_key_and_a_wrong_key_is_refused(console: Console) -> None:
    page = console.page
    console.goto("/agents")
    expect(page).to_have_url(re.compile(r"/login\?next=/agents$"))
    page.get_by_test_id("login-key").fill("not-the-key")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_be_visible()
    expect(page.get_by_test_id("login-key")).to_have_attribute("aria-invalid", "true")
    assert not [c for c in page.context.cookies() if c["name"] == "govrix_session"]

    page.get_by_test_id("login-key").fill(KEY)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(re.compile(r"/agents$"))  # back where the login interrupted
    expect(page.get_by_test_id("agents-table")).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "govrix_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    no_errors(console, allowed=("401",))  # the wrong key's answer


# -- every page, and the README's screenshots ------------------------------------------------------

#: (screenshot name or None, path, an element the page must show once loaded)
TOUR = [
    ("overview", "/", "metric-calls"),
    ("agents", "/agents", "agent-row"),
    ("agent", "/agents/{support}", "kill-switch"),
    ("sessions", "/sessions", "session-row"),
    ("session", "/sessions/{session}", "chain-badge"),
    (None, "/explorer", "event-row"),
    ("live", "/live", "live-table"),
    ("risk", "/risk", "score-row"),
    ("policies", "/policies", "policy-active"),
    ("budgets", "/budgets", "budget-row"),
    ("keys", "/keys", "key-row"),
    (None, "/audit", "audit-row"),
]


def test_every_page_renders_and_screenshots(operator: Console, stack: Stack) -> None:
    """Each page of the tour shows its data without a script or CSP error; pages not built yet
    are listed (and not shot). With GOVRIX_SCREENSHOTS=1 the README's are saved as <name>.png."""
    page = operator.page
    missing = []
    for name, path, testid in TOUR:
        if not_built(operator, path.format(**stack.seeded)):
            missing.append(path)
            continue
        expect(page.get_by_test_id(testid).first).to_be_visible()
        if name == "live":  # a few calls arriving while we look, one of them refused
            expect(page.get_by_test_id("live-state")).to_have_attribute("data-state", "live")
            live_traffic(stack)
            expect(page.get_by_test_id("live-row").nth(8)).to_be_visible()
        if name:
            shoot(page, name)
    no_errors(operator)
    if missing:
        print(f"\npages not built yet: {', '.join(missing)}")


def live_traffic(s: Stack) -> None:
    """Four calls that succeed (two events each) and one refused by the policy."""
    support = s.agent("support-bot", session="support-ticket-4415")
    assert support.chat("Close ticket #4415 with a summary.", usage=(512, 88)).status_code == 200
    billing = s.agent("billing-agent", session="billing-invoices-nov")
    assert billing.chat("Flag invoices over 30 days.", model="gpt-4o").status_code == 200
    research = s.agent("research-assistant", session="research-vendor-review")
    assert research.claude("Which vendor stores data in the EU?").status_code == 200
    reviewer = s.agent("code-reviewer", session="review-pr-1287")
    assert reviewer.mcp(f"{s.fake_url}/mcp", "list_issues", {"repo": "acme/web"}).status_code == 200
    assert reviewer.chat("Explain this diff.", model="gpt-3.5-turbo").status_code == 403


# -- (b) the kill switch -------------------------------------------------------------------------


def test_block_from_the_agent_page_refuses_the_next_call_within_a_second(
    operator: Console, stack: Stack
) -> None:
    page = operator.page
    agent = stack.agent("invoice-bot")
    assert agent.chat().status_code == 200
    wait_for(lambda: stack.http.get(f"/api/v1/agents/{agent.id}").status_code == 200)
    operator.goto(f"/agents/{agent.id}")
    expect(page.get_by_test_id("agent-status")).to_have_text("active")

    page.get_by_test_id("block-reason").fill("loops on the refunds endpoint")
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/block")
    ) as answered:
        page.get_by_test_id("block").click()
    assert answered.value.status in (200, 303), answered.value.status
    clicked = time.monotonic()
    refused_at, refused = first_status(agent, 403, deadline=5)
    took = refused_at - clicked
    assert refused.json()["error"] == "agent_blocked"
    expect(page.get_by_test_id("done")).to_be_visible()
    expect(page.get_by_test_id("agent-status")).to_have_text("blocked")
    expect(page.get_by_test_id("agent-reason")).to_have_text("loops on the refunds endpoint")
    print(f"\nblock clicked -> first 403 through the proxy: {took * 1000:.0f} ms")
    assert took <= 1.0, took
    with pytest.raises(httpx.ProxyError, match="403"):  # a new tunnel is refused at CONNECT
        stack.agent(agent.name).chat()

    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/unblock")):
        page.get_by_test_id("unblock").click()
    clicked = time.monotonic()
    allowed_at, _ = first_status(agent, 200, deadline=5)
    expect(page.get_by_test_id("agent-status")).to_have_text("active")
    print(f"unblock clicked -> first 200: {(allowed_at - clicked) * 1000:.0f} ms")
    assert allowed_at - clicked <= 1.0
    no_errors(operator)


# -- (e) Live ------------------------------------------------------------------------------------


def test_live_shows_a_call_through_the_proxy_within_a_second(
    operator: Console, stack: Stack
) -> None:
    page = operator.page
    agent = stack.agent("live-watcher")
    operator.goto("/live")
    expect(page.get_by_test_id("live-state")).to_have_attribute("data-state", "live")
    rows = page.locator(f'[data-testid="live-row"]:has(a[href="/agents/{agent.id}"])')
    assert rows.count() == 0
    r = agent.chat("What changed in the pricing page?")
    answered = time.monotonic()
    assert r.status_code == 200
    expect(rows).to_have_count(2, timeout=2000)  # request and response
    took = time.monotonic() - answered
    print(f"\nanswer -> both events on the Live page: {took * 1000:.0f} ms")
    assert took <= 1.0, took
    expect(rows.first).to_contain_text("response")
    expect(rows.first).to_contain_text("200")
    no_errors(operator)


# -- (c) budgets ---------------------------------------------------------------------------------


def test_budget_set_on_the_budgets_page_refuses_with_429(operator: Console, stack: Stack) -> None:
    page = operator.page
    agent = stack.agent("report-writer")
    assert agent.chat(usage=(300, 100)).status_code == 200
    wait_for(lambda: stack.http.get(f"/api/v1/agents/{agent.id}").status_code == 200)
    built(operator, "/budgets")
    form = page.get_by_test_id("budget-create-form")
    form.get_by_test_id("new-scope").select_option("agent")
    form.get_by_test_id("new-agent").fill(agent.id)
    form.get_by_test_id("new-period").select_option("daily")
    form.get_by_test_id("new-metric").select_option("tokens")
    form.get_by_test_id("new-limit").fill("1000")
    form.get_by_test_id("new-enabled").check()
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/budgets")):
        form.get_by_test_id("budget-create").click()
    row = page.get_by_test_id("budget-row").filter(has_text=agent.name)
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("budget-limit")).to_have_text("1,000 tokens")
    (budget,) = stack.http.get("/api/v1/budgets", params={"agent_id": agent.id}).json()
    assert (budget["period"], budget["metric"], budget["limit"]) == ("daily", "tokens", 1000)
    assert budget["enabled"]

    # Each call reports 500 tokens and reserves far less than the limit: two fit, then 429.
    statuses: list[int] = []
    deadline = time.monotonic() + 10
    while (not statuses or statuses[-1] != 429) and time.monotonic() < deadline:
        r = agent.chat(usage=(400, 100), max_tokens=100)
        statuses.append(r.status_code)
    assert statuses[-1] == 429 and 200 in statuses, statuses
    body = r.json()
    assert body["error"] == "budget_exceeded" and body["agent_id"] == agent.id
    assert body["budget"]["limit"] == 1000 and body["budget"]["spent"] >= 1000, body
    use = row.get_by_test_id("budget-use")
    wait_for(lambda: page.reload() and int(use.inner_text().rstrip("%")) >= 100, interval=0.2)
    no_errors(operator)


# -- (d) a session's chain -----------------------------------------------------------------------


def test_session_chain_badge_names_a_tampered_event(operator: Console, stack: Stack) -> None:
    page = operator.page
    agent = stack.agent("contract-checker", session="contract-2026-117")
    session = "ses_contract-2026-117"
    for text in ("Read clause 4.", "Is the liability cap mutual?", "Summarise the risks."):
        assert agent.chat(text).status_code == 200
    events = wait_events(stack.dsn, 6, "session_id = %s", (session,))
    built(operator, "/sessions")
    built(operator, f"/sessions/{session}")
    badge = page.get_by_test_id("chain-badge")
    expect(badge).to_have_text(re.compile(r"^chain valid · 6 events checked$"))

    victim = events[2]["id"]  # the second call's request
    stack.sql("UPDATE events SET model = 'gpt-4o-tampered' WHERE id = %s", (victim,))
    page.reload()
    expect(badge).to_contain_text(f"chain broken at event {victim}")
    expect(page.get_by_test_id("broken-event-link")).to_have_text(victim)
    page.get_by_test_id("broken-event-link").click()  # the event as stored now
    expect(page.get_by_test_id("event-id")).to_contain_text(victim)
    expect(page.get_by_test_id("event-fields")).to_contain_text("gpt-4o-tampered")
    no_errors(operator)


# -- (f) scoring keys ----------------------------------------------------------------------------


def test_key_created_on_the_keys_page_is_shown_once_and_revoked(
    operator: Console, stack: Stack
) -> None:
    page = operator.page
    built(operator, "/keys")
    form = page.get_by_test_id("key-create-form")
    form.get_by_test_id("key-customer").fill("globex")
    form.get_by_test_id("key-tier").select_option("starter")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/keys")):
        form.get_by_test_id("key-create").click()
    new_key = page.get_by_test_id("new-key")
    expect(new_key).to_be_visible()
    key = new_key.inner_text().strip()
    assert re.fullmatch(r"sk-sta-[0-9a-f]{40}", key), key
    row = page.get_by_test_id("key-row").filter(
        has=page.get_by_test_id("key-prefix").filter(has_text=key[:12])
    )
    expect(row).to_have_count(1)
    expect(row).to_contain_text("globex")
    expect(row.get_by_test_id("key-live")).to_be_visible()
    assert stack.http.get("/scores/globex", headers={"X-API-Key": key}).status_code == 200

    page.reload()  # shown once: after a reload only the prefix is left
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    assert key not in page.content()
    expect(row).to_have_count(1)

    page.once("dialog", lambda d: d.accept())  # hx-confirm asks first
    with page.expect_response(lambda r: r.request.method == "POST" and "/revoke" in r.url):
        row.get_by_role("button", name=re.compile("^Revoke")).click()
    expect(row.get_by_test_id("key-revoked")).to_be_visible()
    r = stack.http.get("/scores/globex", headers={"X-API-Key": key})
    assert r.status_code == 401, r.text
    no_errors(operator)


# -- retire, behind a confirmation ------------------------------------------------------------------


def test_retire_asks_first_and_then_refuses_the_agent(operator: Console, stack: Stack) -> None:
    page = operator.page
    agent = stack.agent("legacy-crawler")
    assert agent.chat().status_code == 200
    wait_for(lambda: stack.http.get(f"/api/v1/agents/{agent.id}").status_code == 200)
    operator.goto(f"/agents/{agent.id}")

    page.once("dialog", lambda d: d.dismiss())
    page.get_by_test_id("retire").click()
    expect(page.get_by_test_id("agent-status")).to_have_text("active")
    assert stack.http.get(f"/api/v1/agents/{agent.id}").json()["status"] == "active"

    page.once("dialog", lambda d: d.accept())
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/retire")):
        page.get_by_test_id("retire").click()
    clicked = time.monotonic()
    refused_at, refused = first_status(agent, 403, deadline=5)
    assert refused.json()["error"] == "agent_retired"
    assert refused_at - clicked <= 1.0, refused_at - clicked
    expect(page.get_by_test_id("done")).to_have_text("Agent retired.")
    expect(page.get_by_test_id("agent-status")).to_have_text("retired")
    expect(page.get_by_test_id("retire")).to_have_count(0)
    no_errors(operator)


# -- navigation ----------------------------------------------------------------------------------


def test_the_navigation_swaps_pages_in_place_and_live_starts_on_arrival(
    operator: Console, stack: Stack
) -> None:
    """hx-boost: each link of the navigation swaps the page without a reload (the window's
    marker survives), marks its section current, and the Live stream starts on arriving."""
    page = operator.page
    operator.goto("/")
    page.evaluate("window.__noReload = true")
    for key, path in (("agents", "/agents"), ("sessions", "/sessions"), ("live", "/live"),
                      ("budgets", "/budgets"), ("overview", "/")):  # fmt: skip
        page.get_by_test_id(f"nav-{key}").click()
        expect(page).to_have_url(stack.url + path)
        expect(page.get_by_test_id(f"nav-{key}")).to_have_attribute("aria-current", "page")
        if key == "live":
            expect(page.get_by_test_id("live-state")).to_have_attribute("data-state", "live")
    assert page.evaluate("window.__noReload") is True
    page.go_back()  # history works too: back on Budgets
    expect(page).to_have_url(stack.url + "/budgets")
    no_errors(operator)


# -- mistakes are answered in the page -----------------------------------------------------------


def test_form_mistakes_are_shown_in_the_page_and_change_nothing(
    operator: Console, stack: Stack
) -> None:
    page = operator.page
    budgets = len(stack.http.get("/api/v1/budgets").json())
    built(operator, "/budgets")
    form = page.get_by_test_id("budget-create-form")
    form.get_by_test_id("new-agent").fill(stack.seeded["research"])
    form.get_by_test_id("new-limit").fill("a lot")
    form.get_by_test_id("budget-create").click()
    expect(page.get_by_test_id("action-error")).to_contain_text("must be a number")
    expect(page.get_by_test_id("new-limit")).to_have_value("a lot")  # kept as typed
    expect(page.get_by_test_id("new-limit")).to_have_attribute("aria-invalid", "true")
    assert len(stack.http.get("/api/v1/budgets").json()) == budgets

    keys = len(stack.http.get("/api/v1/keys").json())
    built(operator, "/keys")
    page.get_by_test_id("key-customer").fill("not a customer id!")
    page.get_by_test_id("key-create").click()
    expect(page.get_by_test_id("action-error")).to_be_visible()
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    assert len(stack.http.get("/api/v1/keys").json()) == keys

    operator.goto("/agents/agt_" + "z" * 26)
    expect(page.get_by_test_id("error-message")).to_be_visible()
    operator.goto("/sessions/ses_never-seen")
    expect(page.get_by_test_id("error-message")).to_be_visible()
    no_errors(operator, allowed=("the server responded with a status of 4",))  # the answers


def test_screenshots_are_written_only_when_asked() -> None:
    """CI runs this module too: without GOVRIX_SCREENSHOTS=1 nothing is written; with it, every
    page of the tour that exists is a 1280x800 PNG."""
    if not browserutil.screenshots_enabled():
        assert shoot(object(), "never") is None
        return
    sizes = {}
    for png in browserutil.SCREENSHOTS.glob("*.png"):
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", png
        sizes[png.stem] = (int.from_bytes(head[16:20]), int.from_bytes(head[20:24]))
    assert {"overview", "agents", "agent", "live"} <= sizes.keys(), sorted(sizes)
    assert set(sizes.values()) == {(1280, 800)}, sizes
