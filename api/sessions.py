"""``/api/v1/sessions``: chain heads from ``sessions`` and the lineage check of one session."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.params import FromPath
from psycopg import sql
from psycopg.rows import dict_row

from addon.event import COLUMNS
from addon.lineage import Verdict, verify
from api.db import SESSION_COLUMNS
from api.errors import error_responses, not_found
from api.events import IdFilter, Limit, Offset, PoolDep
from api.pagination import LIMIT_DEFAULT, PAGE_HEADERS, fetch_page, page_headers
from api.schemas import SessionOut

# Every stored column, by name: the verifier recomputes each hash from exactly what is stored.
_VERIFY_Q = sql.SQL("SELECT {} FROM events WHERE session_id = %s").format(
    sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
)


class SessionController(Controller):
    """Sessions (chain heads, counters) and their tamper-evidence check."""

    path = "/sessions"
    tags = ["sessions"]

    @get(
        "/",
        operation_id="listSessions",
        responses=error_responses(400, 401),
        response_headers=PAGE_HEADERS[:1],
    )
    async def list_sessions(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        agent_id: IdFilter = None,
        limit: Limit = LIMIT_DEFAULT,
        offset: Offset = 0,
    ) -> Response[list[SessionOut]]:
        """Sessions, most recently active first; the total is in ``X-Total-Count``."""
        where = sql.SQL("agent_id = %s") if agent_id is not None else sql.SQL("TRUE")
        params: list[Any] = [agent_id] if agent_id is not None else []
        page_q = sql.SQL(
            "SELECT {} FROM sessions WHERE {} ORDER BY last_event_at DESC, id DESC"
            " LIMIT %s OFFSET %s"
        ).format(SESSION_COLUMNS, where)
        count_q = sql.SQL("SELECT count(*) FROM sessions WHERE {}").format(where)
        rows, total = await fetch_page(pool, page_q, count_q, params, limit, offset)
        return Response([SessionOut(*r) for r in rows], headers=page_headers(request, total, None))

    @get("/{session_id:str}", operation_id="getSession", responses=error_responses(401, 404))
    async def get_session(self, pool: PoolDep, session_id: FromPath[str]) -> SessionOut:
        """One session's chain head and counters; 404 ``{"error": "session not found"}``."""
        q = sql.SQL("SELECT {} FROM sessions WHERE id = %s").format(SESSION_COLUMNS)
        async with pool.connection() as conn:
            row = await (await conn.execute(q, (session_id,))).fetchone()
        if row is None:
            raise not_found("session")
        return SessionOut(*row)

    @get(
        "/{session_id:str}/verify",
        operation_id="verifySession",
        responses=error_responses(401, 404),
    )
    async def verify_session(self, pool: PoolDep, session_id: FromPath[str]) -> Verdict:
        """Recompute the session's hash chain from the stored rows; name the first broken link.

        ``valid: false`` comes with ``broken_event_id``, ``broken_seq`` and ``reason``.
        """
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_VERIFY_Q, (session_id,))
            rows = await cur.fetchall()
            await cur.execute(
                "SELECT head_seq, head_hash FROM sessions WHERE id = %s", (session_id,)
            )
            head = await cur.fetchone()
        if not rows:
            raise not_found("session")
        # addon/lineage.py is pure (neither mitmproxy nor Litestar): its verdict is our answer.
        return verify(session_id, rows, (head["head_seq"], head["head_hash"]) if head else None)
