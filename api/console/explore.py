"""The Events explorer (``/explorer``: ``/events`` is the scoring API's ``POST``): the filters of
``GET /api/v1/events`` as a form, keyset paging, and one event with every field (tool-call
arguments as their size only: see :func:`without_arguments`).

Time bounds are typed in UTC (a ``datetime-local`` field has no zone); a bound that is not a
time is shown as an error on the page, with the form as typed, instead of a bare 400.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import msgspec
from litestar import Request, get
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Template

from api.console.client import ApiCallError
from api.console.pages import ApiDep
from api.console.sessions import agent_names, risk_path, scores_of
from api.console.web import error_page, render

EVENTS_PAGE = 50
Text = Annotated[str | None, QueryParameter(max_length=200)]

#: The columns of ``events`` that hold JSON (pretty-printed on the event page).
JSON_FIELDS = ("tool_calls", "policy_decisions", "pii_findings", "sanitized")


def parse_bound(value: str | None) -> datetime | None:
    """A time typed in the form: ISO 8601, taken as UTC when it has no zone."""
    if not value or not value.strip():
        return None
    ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def without_arguments(tool_calls: Any) -> Any:
    """``tool_calls`` with any ``arguments`` text replaced by its size. The recorder stores only
    ``arguments_bytes``; rows written otherwise (imported, older) may hold the values, which can
    be PII, and the console never shows a PII value."""
    if not isinstance(tool_calls, list):
        return tool_calls
    return [
        {
            k: (f"({len(str(v).encode())} bytes, not shown)" if k == "arguments" else v)
            for k, v in tc.items()
        }
        if isinstance(tc, dict)
        else tc
        for tc in tool_calls
    ]


def pretty(value: Any) -> str:
    """JSON as indented text (escaped by the template like any other text)."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


@get("/explorer", name="console:events")
async def events(
    request: Request[Any, Any, Any],
    api: ApiDep,
    agent_id: Text = None,
    session_id: Text = None,
    provider: Text = None,
    model: Text = None,
    direction: FromQuery[Literal["", "request", "response"] | None] = None,
    compliance_tag: Text = None,
    pii_detected: FromQuery[Literal["", "true", "false"] | None] = None,
    from_: Annotated[str | None, QueryParameter(name="from", max_length=40)] = None,
    to: Annotated[str | None, QueryParameter(max_length=40)] = None,
    cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Template:
    """Recorded events, newest first, 50 a page ("Older" carries the keyset cursor)."""
    form = {
        "agent_id": (agent_id or "").strip(),
        "session_id": (session_id or "").strip(),
        "provider": (provider or "").strip(),
        "model": (model or "").strip(),
        "direction": direction or "",
        "compliance_tag": (compliance_tag or "").strip(),
        "pii_detected": pii_detected or "",
        "from": (from_ or "").strip(),
        "to": (to or "").strip(),
    }
    error = None
    items: list[dict[str, Any]] = []
    total = 0
    next_cursor = None
    try:
        bounds = {"from": parse_bound(from_), "to": parse_bound(to)}
    except ValueError:
        bounds, error = {}, "A time bound is not a date and time (e.g. 2026-03-05T14:30)."
    for k, v in bounds.items():  # as a datetime-local field shows it: UTC without a zone
        form[k] = v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if v else ""
    status_code = 200
    names = await agent_names(api)
    if error is None:
        params: dict[str, str | None] = {k: v for k, v in form.items() if k not in ("from", "to")}
        params |= {k: iso(v) for k, v in bounds.items()}
        try:
            page = await api.page("/events", limit=EVENTS_PAGE, cursor=cursor, **params)
            items, total, next_cursor = page.items, page.total or 0, page.next_cursor
        except ApiCallError as e:
            if e.status >= 500:
                raise
            error, status_code = e.message, e.status
    query = {k: v for k, v in form.items() if v}
    return render(
        request,
        "events.html",
        nav="events",
        title="Events",
        status_code=status_code,
        events=items,
        total=total,
        form=form,
        filtered=bool(query),
        error=error,
        names=names,
        cursor=cursor,
        newest_url="/explorer?" + urlencode(query) if query else "/explorer",
        older_url=(
            "/explorer?" + urlencode({**query, "cursor": next_cursor}) if next_cursor else None
        ),
    )


@get("/explorer/{event_id:str}", name="console:event")
async def event_page(
    request: Request[Any, Any, Any], api: ApiDep, event_id: FromPath[str]
) -> Template:
    """One event: every field as the API answers it; JSON fields pretty-printed."""
    try:
        event = await api.get(f"/events/{quote(event_id, safe='')}")
    except ApiCallError as e:
        if e.status == 404:
            return error_page(request, 404, "Event not found.", title="Not found")
        raise
    names, scores = await asyncio.gather(
        agent_names(api), scores_of(api, session_id=event["session_id"])
    )
    # Its inline scores: an MCP call's under its own id, an LLM tool call's as "<id>:tool<i>".
    mine = [
        {**s, "url": risk_path(s["customer_id"], s["event_id"])}
        for s in scores
        if s["event_id"] == event["id"] or s["event_id"].startswith(event["id"] + ":")
    ]
    shown = {**event, "tool_calls": without_arguments(event.get("tool_calls"))}
    fields = [
        (k, pretty(v) if k in JSON_FIELDS and v is not None else v, k in JSON_FIELDS)
        for k, v in shown.items()
    ]
    return render(
        request,
        "event.html",
        nav="events",
        title=f"Event {event['id']}",
        event=event,
        fields=fields,
        agent_name=names.get(event["agent_id"]),
        scores=mine,
    )
