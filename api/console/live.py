"""The Live page and its stream (``GET /live/stream``, cookie-authenticated).

Why not through :class:`~api.console.client.ApiClient`: ``httpx.ASGITransport`` buffers a whole
response, and an SSE body never ends. So this endpoint subscribes to the process's
:class:`~api.stream.StreamHub` itself, through :func:`api.stream.sse_response`, the very function
behind ``GET /api/v1/events/stream``: same filters (``agent_id``, ``session_id``), same
``Last-Event-ID`` resume (header, or ``last_event_id``), same messages. The browser's
``EventSource`` (static/live.js) sends ``Last-Event-ID`` by itself when it reconnects.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import Stream, Template

from api.console.web import render
from api.events import PoolDep
from api.stream import StreamHub, sse_response

Filter = Annotated[str | None, QueryParameter(max_length=200)]


@get("/live", name="console:live")
async def live_page(
    request: Request[Any, Any, Any], agent_id: Filter = None, session_id: Filter = None
) -> Template:
    """New events as they are recorded, newest on top, with the stream's filters."""
    return render(
        request,
        "live.html",
        nav="live",
        title="Live",
        agent_id=agent_id or "",
        session_id=session_id or "",
    )


@get("/live/stream", name="console:live-stream", media_type="text/event-stream")
async def live_stream(
    pool: PoolDep,
    hub: NamedDependency[StreamHub],
    keepalive_interval: NamedDependency[float],
    agent_id: Filter = None,
    session_id: Filter = None,
    last_event_id: Filter = None,
    last_event_id_header: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", max_length=200, required=False)
    ] = None,
) -> Stream:
    """``GET /api/v1/events/stream`` for a logged-in console (module docstring)."""
    return sse_response(
        hub,
        pool,
        agent_id or None,
        session_id or None,
        last_event_id_header or last_event_id or None,
        keepalive_interval,
    )
