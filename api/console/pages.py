"""The console's pages of phase 1: Overview, Agents, one agent (with the kill switch), and the
pages still to build. Every number comes from a public route through :class:`ApiClient`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from api.console.auth import ConsoleConfig
from api.console.client import ApiCallError, ApiClient
from api.console.svg import meter, stacked_bars
from api.console.web import NAV_BY_KEY, error_page, parse_ts, render

ApiDep = NamedDependency[ApiClient]
Window = Literal["1h", "24h", "30d"]
WINDOWS: tuple[tuple[str, str], ...] = (
    ("1h", "Last hour"),
    ("24h", "Last day"),
    ("30d", "30 days"),
)
RISK_SERIES = ("none", "low", "medium", "high", "critical")
_BUCKET_LABEL = {"1h": "%H:%M", "24h": "%H:00", "30d": "%m-%d", "today": "%H:00"}
AGENTS_PAGE = 50
REASON_MAX = 500

#: What an action's redirect may announce (``?done=``): fixed texts, nothing echoed from the URL.
DONE = {
    "blocked": "Agent blocked. Every proxy refuses its calls from now on.",
    "unblocked": "Agent unblocked.",
    "retired": "Agent retired.",
}


async def provide_api(
    request: Request[Any, Any, Any], console_config: NamedDependency[ConsoleConfig]
) -> AsyncIterator[ApiClient]:
    """One in-process client per console request (closed when the response is sent)."""
    async with ApiClient(request.app, console_config.api_key) as client:
        yield client


def _agent_path(agent_id: str, suffix: str = "") -> str:
    return f"/agents/{quote(agent_id, safe='')}{suffix}"


async def _agent_names(api: ApiClient) -> dict[str, str]:
    """id -> name of the first 1000 registered agents (names for ids in tables)."""
    page = await api.page("/agents", limit=1000)
    return {a["id"]: a["name"] for a in page.items}


# -- Overview ------------------------------------------------------------------------------------


@get("/", name="console:overview")
async def overview(
    request: Request[Any, Any, Any], api: ApiDep, window: FromQuery[Window] = "24h"
) -> Template:
    """Totals, refusals, PII, risk over time and top lists for a window."""
    stats, names, proxies = await asyncio.gather(
        api.get("/stats/overview", window=window), _agent_names(api), api.get("/stats/proxies")
    )
    fmt = _BUCKET_LABEL[window]
    bars = []
    for b in stats["risk"]:
        start = parse_ts(b["start"])
        bars.append((start.strftime(fmt) if start else "", {s: b[s] for s in RISK_SERIES}))
    chart = stacked_bars(
        bars,
        RISK_SERIES,
        label=f"Scored actions by risk level, {dict(WINDOWS)[window].lower()}",
        testid="risk-chart",
    )
    refusals = stats["refusals"]
    return render(
        request,
        "overview.html",
        nav="overview",
        title="Overview",
        stats=stats,
        window=window,
        windows=WINDOWS,
        chart=chart,
        risk_rows=[(label, values) for label, values in bars if any(values.values())],
        risk_series=RISK_SERIES,
        refusals_total=sum(refusals.values()),
        names=names,
        proxies=proxies["items"],
    )


# -- Agents --------------------------------------------------------------------------------------


def budget_use(budgets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per agent, its most used enabled budget: ratio, label (``$3.10 of $5.00 usd daily``)."""
    out: dict[str, dict[str, Any]] = {}
    for b in budgets:
        if not b.get("enabled") or not b.get("agent_id"):
            continue
        limit = float(b["limit"])
        used = float(b["spent"]) + float(b["reserved"])
        ratio = used / limit if limit > 0 else 1.0
        per = {"daily": "day", "monthly": "month"}.get(b["period"], b["period"])
        if b["metric"] == "usd":
            text = f"${used:,.2f} of ${limit:,.2f} per {per}"
        else:
            text = f"{used:,.0f} of {limit:,.0f} tokens per {per}"
        current = out.get(b["agent_id"])
        if current is None or ratio > current["ratio"]:
            out[b["agent_id"]] = {
                "ratio": ratio,
                "label": text,
                "svg": meter(used, limit, label=text),
            }
    return out


@get("/agents", name="console:agents")
async def agents(
    request: Request[Any, Any, Any],
    api: ApiDep,
    status: FromQuery[Literal["active", "blocked", "retired"] | None] = None,
    offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
) -> Template:
    """The registry: status, last seen, calls and spend today, budget use, top risk."""
    page, today, budgets = await asyncio.gather(
        api.page("/agents", status=status, limit=AGENTS_PAGE, offset=offset),
        api.get("/stats/agents", window="today"),
        api.page("/budgets", scope="agent", enabled=True, limit=1000),
    )
    by_agent = {s["agent_id"]: s for s in today["agents"]}
    total = page.total or 0
    query = {"status": status} if status else {}
    prev_url = (
        "/agents?" + urlencode({**query, "offset": max(offset - AGENTS_PAGE, 0)})
        if offset > 0
        else None
    )
    next_url = (
        "/agents?" + urlencode({**query, "offset": offset + AGENTS_PAGE})
        if offset + AGENTS_PAGE < total
        else None
    )
    return render(
        request,
        "agents.html",
        nav="agents",
        title="Agents",
        agents=page.items,
        today=by_agent,
        budgets=budget_use(budgets.items),
        status=status,
        total=total,
        offset=offset,
        prev_url=prev_url,
        next_url=next_url,
    )


async def _agent_context(api: ApiClient, agent_id: str, cursor: str | None) -> dict[str, Any]:
    agent = await api.get(_agent_path(agent_id))
    today, sessions, events, budgets, audit = await asyncio.gather(
        api.get("/stats/agents", window="today", agent_id=agent_id),
        api.page("/sessions", agent_id=agent_id, limit=20),
        api.page(_agent_path(agent_id, "/events"), limit=50, cursor=cursor),
        api.page("/budgets", agent_id=agent_id, limit=100),
        api.page("/audit", target=f"agent:{agent_id}", limit=20),
    )
    stats = today["agents"][0] if today["agents"] else None
    return {
        "agent": agent,
        "today": stats,
        "sessions": sessions,
        "events": events,
        "budgets": budgets.items,
        "budget_use": budget_use(budgets.items).get(agent_id),
        "audit": audit.items,
        "older_url": (
            _agent_path(agent_id) + "?" + urlencode({"cursor": events.next_cursor})
            if events.next_cursor
            else None
        ),
    }


@get("/agents/{agent_id:str}", name="console:agent")
async def agent_page(
    request: Request[Any, Any, Any],
    api: ApiDep,
    agent_id: FromPath[str],
    cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
    done: Annotated[str | None, QueryParameter(max_length=20)] = None,
) -> Template:
    """One agent: its details, today's numbers, budgets, sessions, events, changes, and the
    kill switch."""
    context = await _agent_context(api, agent_id, cursor)
    return render(
        request,
        "agent.html",
        nav="agents",
        title=context["agent"]["name"],
        done=DONE.get(done or ""),
        error=None,
        reason="",
        cursor=cursor,
        **context,
    )


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _set_status(
    request: Request[Any, Any, Any],
    api: ApiClient,
    agent_id: str,
    change: Literal["blocked", "unblocked", "retired"],
) -> Template | Redirect:
    """Apply a kill-switch change through the public routes; on an API error, show the agent
    page again with the route's message (and the reason as typed)."""
    form = await _form(request)
    reason = form.get("reason", "").strip()
    try:
        if change == "retired":
            await api.post(_agent_path(agent_id, "/retire"))
        else:
            if change == "blocked" and not reason:
                raise ApiCallError(400, "Give a reason for blocking the agent.", "reason")
            if len(reason) > REASON_MAX:
                raise ApiCallError(400, f"The reason is longer than {REASON_MAX} characters.")
            agent = await api.get(_agent_path(agent_id))
            # metadata replaces the whole object: keep every other key as it is.
            metadata = {k: v for k, v in agent["metadata"].items() if k != "reason"}
            if change == "blocked":
                metadata["reason"] = reason
            await api.put(
                _agent_path(agent_id),
                {"status": "blocked" if change == "blocked" else "active", "metadata": metadata},
            )
    except ApiCallError as e:
        if e.status == 404:
            return error_page(request, 404, e.message)
        context = await _agent_context(api, agent_id, None)
        return render(
            request,
            "agent.html",
            nav="agents",
            title=context["agent"]["name"],
            status_code=e.status if 400 <= e.status < 500 else 502,
            done=None,
            error=e.message,
            reason=reason,
            cursor=None,
            **context,
        )
    return Redirect(_agent_path(agent_id) + f"?done={change}", status_code=303)


@post("/agents/{agent_id:str}/block", name="console:agent-block", status_code=303)
async def block_agent(
    request: Request[Any, Any, Any], api: ApiDep, agent_id: FromPath[str]
) -> Template | Redirect:
    """The kill switch: status ``blocked`` with ``metadata.reason`` (``PUT /api/v1/agents``)."""
    return await _set_status(request, api, agent_id, "blocked")


@post("/agents/{agent_id:str}/unblock", name="console:agent-unblock", status_code=303)
async def unblock_agent(
    request: Request[Any, Any, Any], api: ApiDep, agent_id: FromPath[str]
) -> Template | Redirect:
    """Status ``active`` again; ``metadata.reason`` is removed (the audit log keeps it)."""
    return await _set_status(request, api, agent_id, "unblocked")


@post("/agents/{agent_id:str}/retire", name="console:agent-retire", status_code=303)
async def retire_agent(
    request: Request[Any, Any, Any], api: ApiDep, agent_id: FromPath[str]
) -> Template | Redirect:
    """``POST /api/v1/agents/{id}/retire``."""
    return await _set_status(request, api, agent_id, "retired")


# -- pages of the next phase ----------------------------------------------------------------------


def _not_built(key: str) -> Any:
    item = NAV_BY_KEY[key]

    async def page(request: Request[Any, Any, Any]) -> Template:
        return render(
            request, "not_built.html", nav=key, title=item.label, item=item
        )  # fmt: skip

    page.__name__ = f"not_built_{key}"
    page.__doc__ = f"{item.label}: not built yet (the API route is listed)."
    return get(item.href, name=f"console:{key}")(page)


NOT_BUILT: list[Any] = []  # every section is built; _not_built serves the next one
