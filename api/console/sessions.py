"""The Sessions pages: the list (``GET /api/v1/sessions``) and one session, turn by turn, with
the verdict of its hash chain (``GET /api/v1/sessions/{id}/verify``).

A turn is a request event and the response event whose ``parent_id`` it is. PII is shown as
types and counts (``pii_findings`` never holds a value, and neither does this page); tool calls
with the verdict the proxy scored inline, linked to the stored score on the Risk page.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from litestar import Request, get
from litestar.params import FromPath, QueryParameter
from litestar.response import Template

from api.console.client import ApiCallError, ApiClient, Page
from api.console.pages import ApiDep
from api.console.web import error_page, render

SESSIONS_PAGE = 50
TURNS_PAGE = 500
IdQuery = Annotated[str | None, QueryParameter(max_length=200)]


def session_path(session_id: str) -> str:
    return f"/sessions/{quote(session_id, safe='')}"


def risk_path(customer_id: str, event_id: str) -> str:
    """The Risk page of one stored score (api/console/risk.py)."""
    return f"/risk/{quote(customer_id, safe='')}/{quote(event_id, safe='')}"


async def agent_names(api: ApiClient) -> dict[str, str]:
    """id -> name of the first 1000 registered agents."""
    page = await api.page("/agents", limit=1000)
    return {a["id"]: a["name"] for a in page.items}


async def scores_of(api: ApiClient, **filters: Any) -> list[dict[str, Any]]:
    """Stored scores of any customer (``GET /api/v1/scores``, newest first, up to 1000); empty
    when this API process does not mount the scoring routes."""
    try:
        page = await api.page("/scores", limit=1000, **filters)
    except ApiCallError as e:
        if e.status == 404:
            return []
        raise
    return page.items


# -- what a turn shows ----------------------------------------------------------------------------


def pii_counts(*events: dict[str, Any] | None) -> list[tuple[str, int | None]]:
    """(type, findings) over the events: counts from ``pii_findings``, else the types alone."""
    counts: Counter[str] = Counter()
    types: set[str] = set()
    for e in events:
        if not e:
            continue
        for f in e.get("pii_findings") or []:
            if isinstance(f, dict) and isinstance(f.get("type"), str):
                n = f.get("count")
                counts[f["type"]] += n if isinstance(n, int) else 1
        types.update(t for t in e.get("pii_types") or [] if isinstance(t, str))
    return [(t, counts.get(t)) for t in sorted(types | set(counts))]


#: The keys of a decision (addon/policy/calls.py ``note_decision``), in the order written.
_DECISION_KEYS = ("phase", "rule", "action", "matched", "block", "tags", "logs", "redact")


def decision_text(d: Any) -> str:
    """One ``policy_decisions`` entry as a line: ``phase request · matched a, b · block a``."""
    if not isinstance(d, dict):
        return str(d)
    parts = []
    # jsonb keeps keys in its own order: put them back in the order note_decision writes them.
    order = {k: i for i, k in enumerate(_DECISION_KEYS)}
    for k, v in sorted(d.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        if v is True:
            parts.append(str(k))
        elif isinstance(v, list):
            parts.append(f"{k} {', '.join(str(x) for x in v)}")
        elif v is not None and v is not False:
            parts.append(f"{k} {v}")
    return " · ".join(parts)


@dataclass
class ToolCall:
    name: str
    risk_level: str | None
    score: int | None
    violations: list[str]
    offered: bool
    risk_url: str | None


@dataclass
class Turn:
    """A request and its response (either may be missing from the page)."""

    request: dict[str, Any] | None
    response: dict[str, Any] | None
    pii: list[tuple[str, int | None]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    tools: list[ToolCall] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Any]:
        e = self.request or self.response
        assert e is not None
        return e

    def pick(self, name: str) -> Any:
        """The response's value of a field, else the request's."""
        for e in (self.response, self.request):
            if e is not None and e.get(name) is not None:
                return e[name]
        return None


def _tool_calls(event: dict[str, Any], scores: dict[str, tuple[str, str]]) -> list[ToolCall]:
    out = []
    for i, tc in enumerate(event.get("tool_calls") or []):
        if not isinstance(tc, dict):
            continue
        # Inline scores are stored under the event's id (an MCP call) or "<id>:tool<i>".
        stored = scores.get(f"{event['id']}:tool{i}") or scores.get(event["id"])
        score = tc.get("score")
        violations = tc.get("violations")
        out.append(
            ToolCall(
                name=str(tc.get("name") or "?"),
                risk_level=tc.get("risk_level") if isinstance(tc.get("risk_level"), str) else None,
                score=score if isinstance(score, int) else None,
                violations=[str(v) for v in violations] if isinstance(violations, list) else [],
                offered=bool(tc.get("offered")),
                risk_url=risk_path(*stored) if stored else None,
            )
        )
    return out


def turns_of(events: list[dict[str, Any]], scores: list[dict[str, Any]]) -> list[Turn]:
    """Events (oldest first) paired into turns, in the order their first event was recorded."""
    by_event = {s["event_id"]: (s["customer_id"], s["event_id"]) for s in scores}
    turns: list[Turn] = []
    open_requests: dict[str, Turn] = {}
    for e in events:
        parent = e.get("parent_id")
        if e.get("direction") == "response" and parent in open_requests:
            turn = open_requests.pop(parent)
            turn.response = e
        elif e.get("direction") == "response":
            turn = Turn(request=None, response=e)
            turns.append(turn)
        else:
            turn = Turn(request=e, response=None)
            turns.append(turn)
            open_requests[e["id"]] = turn
    for turn in turns:
        pair = [e for e in (turn.request, turn.response) if e is not None]
        turn.pii = pii_counts(*pair)
        turn.decisions = [decision_text(d) for e in pair for d in e.get("policy_decisions") or []]
        turn.tools = [t for e in pair for t in _tool_calls(e, by_event)]
    return turns


# -- pages ----------------------------------------------------------------------------------------


@get("/sessions", name="console:sessions")
async def sessions(
    request: Request[Any, Any, Any],
    api: ApiDep,
    agent_id: IdQuery = None,
    offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
) -> Template:
    """Sessions, most recently active first, 50 a page; filter by agent."""
    agent_id = (agent_id or "").strip() or None
    page, names = await asyncio.gather(
        api.page("/sessions", agent_id=agent_id, limit=SESSIONS_PAGE, offset=offset),
        agent_names(api),
    )
    total = page.total or 0
    query = {"agent_id": agent_id} if agent_id else {}
    prev_url = (
        "/sessions?" + urlencode({**query, "offset": max(offset - SESSIONS_PAGE, 0)})
        if offset > 0
        else None
    )
    next_url = (
        "/sessions?" + urlencode({**query, "offset": offset + SESSIONS_PAGE})
        if offset + SESSIONS_PAGE < total
        else None
    )
    return render(
        request,
        "sessions.html",
        nav="sessions",
        title="Sessions",
        sessions=page.items,
        names=names,
        agent_id=agent_id or "",
        total=total,
        offset=offset,
        prev_url=prev_url,
        next_url=next_url,
    )


async def _agent_name(api: ApiClient, agent_id: str) -> str | None:
    try:
        agent = await api.get(f"/agents/{quote(agent_id, safe='')}")
    except ApiCallError as e:
        if e.status == 404:
            return None
        raise
    name: str = agent["name"]
    return name


@get("/sessions/{session_id:str}", name="console:session")
async def session_page(
    request: Request[Any, Any, Any],
    api: ApiDep,
    session_id: FromPath[str],
    cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Template:
    """One session: its counters, the chain verdict, and its turns in order (500 events a page,
    "Later" by keyset cursor)."""
    sid = quote(session_id, safe="")
    try:
        session = await api.get(f"/sessions/{sid}")
    except ApiCallError as e:
        if e.status == 404:
            return error_page(request, 404, "Session not found.", title="Not found")
        raise
    events, verdict, scores, name = await asyncio.gather(
        _session_events(api, sid, cursor),
        _verdict(api, sid),
        scores_of(api, session_id=session_id),
        _agent_name(api, session["agent_id"]),
    )
    return render(
        request,
        "session.html",
        nav="sessions",
        title=f"Session {session_id}",
        session=session,
        agent_name=name,
        verdict=verdict,
        turns=turns_of(events.items, scores),
        events_total=events.total or 0,
        cursor=cursor,
        later_url=(
            session_path(session_id) + "?" + urlencode({"cursor": events.next_cursor})
            if events.next_cursor
            else None
        ),
    )


async def _verdict(api: ApiClient, sid: str) -> dict[str, Any] | None:
    """The chain verdict; None when no event is left to check (404 from verify)."""
    try:
        verdict: dict[str, Any] = await api.get(f"/sessions/{sid}/verify")
    except ApiCallError as e:
        if e.status == 404:
            return None
        raise
    return verdict


async def _session_events(api: ApiClient, sid: str, cursor: str | None) -> Page:
    try:
        return await api.page(f"/events/sessions/{sid}", limit=TURNS_PAGE, cursor=cursor)
    except ApiCallError as e:
        if e.status == 404:  # a session row whose events were dropped by retention
            return Page(items=[], total=0, next_cursor=None)
        raise
