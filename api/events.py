"""``/api/v1/events``: list (filters, offset or keyset paging), one event, one session's events.

Lists are newest first by ``("timestamp", id)``; a session's events are oldest first. Every page
query and its count go to PostgreSQL together in one pipeline (one round trip).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from api.count_cache import TotalCache
from api.db import EVENT_COLUMNS
from api.errors import bad_request, error_responses, not_found
from api.pagination import (
    LIMIT_DEFAULT,
    LIMIT_MAX,
    PAGE_HEADERS,
    decode_cursor,
    encode_cursor,
    page_headers,
)
from api.schemas import Direction, EventOut

Pool = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]
PoolDep = NamedDependency[Pool]  # injected by name from the app's ``pool`` dependency
CountsDep = NamedDependency[TotalCache]

Limit = Annotated[
    int,
    QueryParameter(
        ge=1,
        le=LIMIT_MAX,
        description=f"Page size, 1..{LIMIT_MAX} (0 or more than {LIMIT_MAX} is a 400).",
    ),
]
Offset = Annotated[
    int,
    QueryParameter(
        ge=0, le=10_000_000, description="Rows to skip; prefer `cursor` for deep pages."
    ),
]
CursorParam = Annotated[
    str | None,
    QueryParameter(
        max_length=200,
        description="Opaque keyset cursor from a previous page's `X-Next-Cursor` header.",
    ),
]
IdFilter = Annotated[str | None, QueryParameter(max_length=200)]


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Equality and time-range filters on ``events``; ``None`` means "any"."""

    agent_id: str | None = None
    session_id: str | None = None
    from_: datetime | None = None
    to: datetime | None = None
    model: str | None = None
    provider: str | None = None
    direction: str | None = None
    compliance_tag: str | None = None
    pii_detected: bool | None = None

    def conditions(self) -> tuple[list[sql.Composable], list[Any]]:
        conds: list[sql.Composable] = []
        params: list[Any] = []
        for column in (
            "agent_id",
            "session_id",
            "model",
            "provider",
            "direction",
            "compliance_tag",
            "pii_detected",
        ):
            value = getattr(self, column)
            if value is not None:
                conds.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if self.from_ is not None:
            conds.append(sql.SQL('"timestamp" >= %s'))
            params.append(self.from_)
        if self.to is not None:
            conds.append(sql.SQL('"timestamp" < %s'))
            params.append(self.to)
        return conds, params


_AFTER_DESC = sql.SQL('"timestamp" <= %s AND ("timestamp" < %s OR id < %s)')
_AFTER_ASC = sql.SQL('"timestamp" >= %s AND ("timestamp" > %s OR id > %s)')
_ORDER_DESC = sql.SQL('ORDER BY "timestamp" DESC, id DESC')
_ORDER_ASC = sql.SQL('ORDER BY "timestamp", id')


async def event_page(
    pool: Pool,
    counts: TotalCache,
    request: Request[Any, Any, Any],
    filters: EventFilters,
    *,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
    ascending: bool = False,
) -> tuple[list[EventOut], dict[str, str], int]:
    """One page of events, its paging headers, and the total matching ``filters``.

    The total is exact up to ``counts.exact_below`` rows, cached above (api/count_cache.py).
    """
    if cursor is not None and offset:
        raise bad_request("offset", "cannot be combined with cursor")
    conds, params = filters.conditions()
    page_conds, page_params = list(conds), list(params)
    if cursor is not None:
        c = decode_cursor(cursor)
        page_conds.append(_AFTER_ASC if ascending else _AFTER_DESC)
        page_params += [c.timestamp, c.timestamp, c.id]
    page_q = sql.SQL("SELECT {} FROM events WHERE {} {} LIMIT %s OFFSET %s").format(
        EVENT_COLUMNS,
        sql.SQL(" AND ").join(page_conds or [sql.SQL("TRUE")]),
        _ORDER_ASC if ascending else _ORDER_DESC,
    )
    where = sql.SQL(" AND ").join(conds or [sql.SQL("TRUE")])
    full_count_q = sql.SQL("SELECT count(*) FROM events WHERE {}").format(where)
    capped_count_q = sql.SQL(
        "SELECT count(*) FROM (SELECT 1 FROM events WHERE {} LIMIT %s) AS t"
    ).format(where)

    async def full_count() -> int:
        async with pool.connection() as c:
            row = await (await c.execute(full_count_q, params)).fetchone()
        return int(row[0]) if row else 0

    cached = counts.cached(filters, full_count)
    async with pool.connection() as conn, conn.pipeline():
        page_cur = await conn.execute(page_q, [*page_params, limit, offset])
        if cached is None:
            count_cur = await conn.execute(capped_count_q, [*params, counts.exact_below + 1])
        rows = await page_cur.fetchall()
        if cached is None:
            count_row = await count_cur.fetchone()
    if cached is not None:
        total = cached
    else:
        total = int(count_row[0]) if count_row else 0
        if total > counts.exact_below:  # a large set, seen the first time: count it all once
            total = await counts.large(filters, full_count)
    events = [EventOut(*r) for r in rows]
    next_cursor = None
    if len(events) == limit:
        last = events[-1]
        next_cursor = encode_cursor(last.timestamp, last.id)
    return events, page_headers(request, total, next_cursor), total


class EventController(Controller):
    """Recorded events (seed 000)."""

    path = "/events"
    tags = ["events"]

    @get(
        "/",
        operation_id="listEvents",
        responses=error_responses(400, 401),
        response_headers=PAGE_HEADERS,
    )
    async def list_events(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        counts: CountsDep,
        agent_id: IdFilter = None,
        session_id: IdFilter = None,
        from_: Annotated[
            datetime | None,
            QueryParameter(
                name="from", description="Inclusive lower bound on timestamp (ISO 8601)."
            ),
        ] = None,
        to: Annotated[
            datetime | None,
            QueryParameter(description="Exclusive upper bound on timestamp (ISO 8601)."),
        ] = None,
        model: IdFilter = None,
        provider: IdFilter = None,
        direction: FromQuery[Direction | None] = None,
        compliance_tag: IdFilter = None,
        pii_detected: FromQuery[bool | None] = None,
        limit: Limit = LIMIT_DEFAULT,
        offset: Offset = 0,
        cursor: CursorParam = None,
    ) -> Response[list[EventOut]]:
        """List events, newest first, as a bare JSON array; the total is in ``X-Total-Count``.

        Page with ``offset`` or, for deep pages, with the ``cursor`` from ``X-Next-Cursor`` (also
        given as a ``Link: <...>; rel="next"`` header).
        """
        for name, value in (("from", from_), ("to", to)):
            if value is not None and value.tzinfo is None:
                raise bad_request(name, "timestamp needs a time zone (e.g. Z)")
        filters = EventFilters(
            agent_id=agent_id,
            session_id=session_id,
            from_=from_,
            to=to,
            model=model,
            provider=provider,
            direction=direction,
            compliance_tag=compliance_tag,
            pii_detected=pii_detected,
        )
        events, headers, _ = await event_page(
            pool, counts, request, filters, limit=limit, offset=offset, cursor=cursor
        )
        return Response(events, headers=headers)

    @get("/{event_id:str}", operation_id="getEvent", responses=error_responses(401, 404))
    async def get_event(self, pool: PoolDep, event_id: FromPath[str]) -> EventOut:
        """One event by id; 404 ``{"error": "event not found"}``."""
        q = sql.SQL("SELECT {} FROM events WHERE id = %s LIMIT 1").format(EVENT_COLUMNS)
        async with pool.connection() as conn:
            cur = await conn.execute(q, (event_id,))
            row = await cur.fetchone()
        if row is None:
            raise not_found("event")
        return EventOut(*row)

    @get(
        "/sessions/{session_id:str}",
        operation_id="listSessionEvents",
        responses=error_responses(400, 401, 404),
        response_headers=PAGE_HEADERS,
    )
    async def session_events(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        counts: CountsDep,
        session_id: FromPath[str],
        limit: Annotated[
            int,
            QueryParameter(
                ge=1,
                le=LIMIT_MAX,
                description="Page size; the whole session up to 1000 by default.",
            ),
        ] = LIMIT_MAX,
        cursor: CursorParam = None,
    ) -> Response[list[EventOut]]:
        """A session's events, oldest first (the turn-by-turn exchange); 404 for no events."""
        events, headers, total = await event_page(
            pool,
            counts,
            request,
            EventFilters(session_id=session_id),
            limit=limit,
            cursor=cursor,
            ascending=True,
        )
        if total == 0:
            raise not_found("session")
        return Response(events, headers=headers)
