"""``/api/v1/agents``: the registry and the kill switch (seed 001).

A status or metadata change is one ``UPDATE agents`` plus its ``audit_log`` row (``agent.update``
or ``agent.retire``, the row before and after: api/audit.py) in one transaction; the
``agents_notify`` trigger (sql/002) announces it on ``govrix_agents`` when it commits and every
proxy applies it to its in-memory table at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from psycopg import sql
from psycopg.types.json import Jsonb

from api import audit
from api.db import AGENT_COLUMNS
from api.errors import ApiError, error_responses, not_found
from api.events import (
    CountsDep,
    CursorParam,
    EventFilters,
    Limit,
    Offset,
    Pool,
    PoolDep,
    event_page,
)
from api.pagination import LIMIT_DEFAULT, PAGE_HEADERS, fetch_page, page_headers
from api.schemas import AgentOut, AgentStatus, AgentUpdate, EventOut, RetireOut

_LOCK = sql.SQL("SELECT {} FROM agents WHERE id = %s FOR UPDATE").format(AGENT_COLUMNS)


async def _change(
    pool: Pool, agent_id: str, action: str, update: sql.Composed, params: tuple[Any, ...]
) -> AgentOut:
    """Apply ``update`` (``RETURNING`` the agent's columns) and audit it, in one transaction.

    The row is locked first, so ``before`` is exactly what the update replaced even when two
    operators act on the same agent at once. 404 (and nothing written) for an unknown agent.
    """
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(_LOCK, (agent_id,))).fetchone()
        if row is None:
            raise not_found("agent")
        before = AgentOut(*row)
        new = await (await conn.execute(update, params)).fetchone()
        assert new is not None  # the row is locked: it cannot have gone
        after = AgentOut(*new)
        await audit.record(
            conn,
            action,
            f"agent:{agent_id}",
            msgspec.to_builtins(before),
            msgspec.to_builtins(after),
        )
    return after


class AgentController(Controller):
    """Registered agents, their status and their events."""

    path = "/agents"
    tags = ["agents"]

    @get(
        "/",
        operation_id="listAgents",
        responses=error_responses(400, 401),
        response_headers=PAGE_HEADERS[:1],
    )
    async def list_agents(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        status: FromQuery[AgentStatus | None] = None,
        limit: Limit = LIMIT_DEFAULT,
        offset: Offset = 0,
    ) -> Response[list[AgentOut]]:
        """List agents, oldest registration first; the total is in ``X-Total-Count``."""
        where = sql.SQL("status = %s") if status is not None else sql.SQL("TRUE")
        params: list[Any] = [status] if status is not None else []
        page_q = sql.SQL(
            "SELECT {} FROM agents WHERE {} ORDER BY created_at, id LIMIT %s OFFSET %s"
        ).format(AGENT_COLUMNS, where)
        count_q = sql.SQL("SELECT count(*) FROM agents WHERE {}").format(where)
        rows, total = await fetch_page(pool, page_q, count_q, params, limit, offset)
        return Response([AgentOut(*r) for r in rows], headers=page_headers(request, total, None))

    @get("/{agent_id:str}", operation_id="getAgent", responses=error_responses(401, 404))
    async def get_agent(self, pool: PoolDep, agent_id: FromPath[str]) -> AgentOut:
        """One agent by id; 404 ``{"error": "agent not found"}``."""
        q = sql.SQL("SELECT {} FROM agents WHERE id = %s").format(AGENT_COLUMNS)
        async with pool.connection() as conn:
            row = await (await conn.execute(q, (agent_id,))).fetchone()
        if row is None:
            raise not_found("agent")
        return AgentOut(*row)

    @put(
        "/{agent_id:str}",
        operation_id="updateAgent",
        responses=error_responses(400, 401, 404),
    )
    async def update_agent(
        self, pool: PoolDep, agent_id: FromPath[str], data: JSONBody[AgentUpdate]
    ) -> AgentOut:
        """Set ``status`` (``active|blocked|retired``) and/or replace ``metadata``.

        This is the kill switch: ``{"status": "blocked"}`` reaches every proxy through the
        ``govrix_agents`` NOTIFY trigger. ``updated_at`` is set to now.
        """
        status = None if data.status is msgspec.UNSET else data.status
        metadata = None if data.metadata is msgspec.UNSET else data.metadata
        if status is None and metadata is None:
            raise ApiError(400, "invalid body: give status and/or metadata", field="status")
        q = sql.SQL(
            "UPDATE agents SET status = coalesce(%s, status), metadata = coalesce(%s, metadata),"
            " updated_at = now() WHERE id = %s RETURNING {}"
        ).format(AGENT_COLUMNS)
        params = (status, Jsonb(metadata) if metadata is not None else None, agent_id)
        return await _change(pool, agent_id, "agent.update", q, params)

    @post(
        "/{agent_id:str}/retire",
        operation_id="retireAgent",
        status_code=200,
        responses=error_responses(401, 404),
    )
    async def retire_agent(self, pool: PoolDep, agent_id: FromPath[str]) -> RetireOut:
        """Retire an agent (``PUT`` with ``{"status": "retired"}``, more explicit in intent)."""
        q = sql.SQL(
            "UPDATE agents SET status = 'retired', updated_at = now() WHERE id = %s RETURNING {}"
        ).format(AGENT_COLUMNS)
        after = await _change(pool, agent_id, "agent.retire", q, (agent_id,))
        return RetireOut(id=after.id, status=after.status, updated_at=after.updated_at)

    @get(
        "/{agent_id:str}/events",
        operation_id="listAgentEvents",
        responses=error_responses(400, 401, 404),
        response_headers=PAGE_HEADERS,
    )
    async def agent_events(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        agent_id: FromPath[str],
        counts: CountsDep,
        from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
        to: FromQuery[datetime | None] = None,
        limit: Limit = LIMIT_DEFAULT,
        offset: Offset = 0,
        cursor: CursorParam = None,
    ) -> Response[list[EventOut]]:
        """An agent's events, newest first (same shape and paging as ``GET /api/v1/events``).

        404 when the agent is neither registered nor has any event.
        """
        events, headers, total = await event_page(
            pool,
            counts,
            request,
            EventFilters(agent_id=agent_id, from_=from_, to=to),
            limit=limit,
            offset=offset,
            cursor=cursor,
        )
        if total == 0:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT 1 FROM agents WHERE id = %s", (agent_id,))
                if await cur.fetchone() is None:
                    raise not_found("agent")
        return Response(events, headers=headers)
