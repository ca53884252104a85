"""The Risk pages: scored actions of every customer with filters, each customer's summary, and
one scored action with its decomposition.

They read ``/api/v1/scores…`` (api/actions/admin.py): the operator's view across customers,
behind the same bearer key as every other ``/api/v1`` route. (``/scores/{customer_id}`` answers a
customer's own ``X-API-Key`` only, which the console does not hold.)
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from litestar import Request, get
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Template

from api.console.client import ApiCallError, ApiClient, Page
from api.console.explore import iso, parse_bound
from api.console.pages import RISK_SERIES, ApiDep
from api.console.sessions import agent_names, risk_path
from api.console.web import error_page, render

SCORES_PAGE = 50
Text = Annotated[str | None, QueryParameter(max_length=200)]
NOT_MOUNTED = "This API process does not serve the scoring routes, so there are no scores to show."


@get("/risk", name="console:risk")
async def risk(
    request: Request[Any, Any, Any],
    api: ApiDep,
    customer_id: Text = None,
    risk_level: FromQuery[Literal["", "none", "low", "medium", "high", "critical"] | None] = None,
    agent_id: Text = None,
    from_: Annotated[str | None, QueryParameter(name="from", max_length=40)] = None,
    to: Annotated[str | None, QueryParameter(max_length=40)] = None,
    offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
) -> Template:
    """Scored actions newest first (50 a page), and per customer: total, average, by level."""
    form = {
        "customer_id": (customer_id or "").strip(),
        "risk_level": risk_level or "",
        "agent_id": (agent_id or "").strip(),
        "from": (from_ or "").strip(),
        "to": (to or "").strip(),
    }
    error = None
    status_code = 200
    try:
        bounds = {"from_date": parse_bound(from_), "to_date": parse_bound(to)}
    except ValueError:
        bounds, error = {}, "A time bound is not a date and time (e.g. 2026-03-05T14:30)."
    for key, name in (("from_date", "from"), ("to_date", "to")):
        v = bounds.get(key)
        form[name] = v.strftime("%Y-%m-%dT%H:%M:%S") if v else ("" if error is None else form[name])
    page = Page(items=[], total=0, next_cursor=None)
    customers: list[dict[str, Any]] = []
    names = await agent_names(api)
    if error is None:
        window = {k: iso(v) for k, v in bounds.items()}
        try:
            page, customers_page = await asyncio.gather(
                api.page(
                    "/scores",
                    customer_id=form["customer_id"],
                    risk_level=form["risk_level"],
                    agent_id=form["agent_id"],
                    limit=SCORES_PAGE,
                    offset=offset,
                    **window,
                ),
                api.page("/scores/customers", **window),
            )
            customers = customers_page.items
        except ApiCallError as e:
            if e.status >= 500:
                raise
            error = NOT_MOUNTED if e.status == 404 else e.message
            status_code = 200 if e.status == 404 else e.status
    total = page.total or 0
    query = {k: v for k, v in form.items() if v}
    prev_url = (
        "/risk?" + urlencode({**query, "offset": max(offset - SCORES_PAGE, 0)})
        if offset > 0
        else None
    )
    next_url = (
        "/risk?" + urlencode({**query, "offset": offset + SCORES_PAGE})
        if offset + SCORES_PAGE < total
        else None
    )
    scores = [{**s, "url": risk_path(s["customer_id"], s["event_id"])} for s in page.items]
    return render(
        request,
        "risk.html",
        nav="risk",
        title="Risk",
        status_code=status_code,
        scores=scores,
        customers=customers,
        levels=RISK_SERIES,
        names=names,
        form=form,
        filtered=bool(query),
        error=error,
        total=total,
        offset=offset,
        prev_url=prev_url,
        next_url=next_url,
        customer_url=lambda c: "/risk?" + urlencode({**query, "customer_id": c, "offset": 0}),
    )


def event_link(event_id: str) -> str | None:
    """The explorer page of the recorded event a score belongs to, when it is one: an MCP call
    is scored under its request event's id, an LLM tool call as ``<response id>:tool<i>``."""
    base = event_id.split(":", 1)[0]
    return f"/explorer/{quote(base, safe='')}" if base.startswith("evt_") else None


async def _recorded_session(api: ApiClient, session_id: str | None) -> bool:
    if not session_id:
        return False
    try:
        await api.get(f"/sessions/{quote(session_id, safe='')}")
    except ApiCallError as e:
        if e.status == 404:
            return False
        raise
    return True


@get("/risk/{customer_id:str}/{event_id:str}", name="console:risk-action")
async def action_page(
    request: Request[Any, Any, Any],
    api: ApiDep,
    customer_id: FromPath[str],
    event_id: FromPath[str],
) -> Template:
    """One scored action: score, level, confidence, reasoning, every score component, the
    violations with their compliance references, and the mitigations."""
    try:
        score = await api.get(f"/scores/{quote(customer_id, safe='')}/{quote(event_id, safe='')}")
    except ApiCallError as e:
        if e.status == 404:
            return error_page(request, 404, "Score not found.", title="Not found")
        raise
    # Actions sent to POST /events name agents and sessions of their own: link only to ours.
    names, recorded = await asyncio.gather(
        agent_names(api), _recorded_session(api, score.get("session_id"))
    )
    return render(
        request,
        "action.html",
        nav="risk",
        title=f"Action {score['action']}",
        score=score,
        agent_name=names.get(score.get("agent_id") or ""),
        session_recorded=recorded,
        event_url=event_link(score["event_id"]),
        customer_url="/risk?" + urlencode({"customer_id": score["customer_id"]}),
    )
