"""The audit trail: every management change, written with the change, read at ``/api/v1/audit``.

A management route writes its change and its ``audit_log`` row (sql/007) in one transaction
(:func:`record`), so the log never shows a change that did not happen nor misses one that did.
The ``scripts/govrix apikey`` command writes the same rows through :func:`record_sync`. Rows hold
what changed (the row before and after, as JSON), never a secret: a key's hash or text and a
policy's YAML stay out (``key.create`` keeps id, prefix, customer and tier; ``policy.put`` the
version id and checksum).

Actions: ``agent.update``, ``agent.retire``, ``budget.create|update|delete``, ``key.create``,
``key.revoke``, ``policy.put``; targets ``agent:<id>``, ``budget:<id>``, ``key:<id>``,
``policy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import msgspec
import psycopg
from litestar import Controller, Request, Response, get
from litestar.params import QueryParameter
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from api.errors import bad_request, error_responses
from api.events import CursorParam, Limit, PoolDep
from api.pagination import LIMIT_DEFAULT, PAGE_HEADERS, decode_cursor, encode_cursor, page_headers

#: Who made a change made through the API: it has one identity, its bearer key.
ACTOR = "api"
#: Who made a change with ``scripts/govrix apikey`` (a shell on the host, not the API).
CLI_ACTOR = "cli"

_INSERT = "INSERT INTO audit_log (who, action, target, before, after) VALUES (%s, %s, %s, %s, %s)"
JsonRow = Mapping[str, Any]


def _params(
    action: str, target: str, before: JsonRow | None, after: JsonRow | None, who: str
) -> tuple[Any, ...]:
    # Plain JSON values here, not at the connection: the API's pool encodes jsonb with msgspec,
    # the command line's connections with the standard library, and both must store the same.
    return (
        who,
        action,
        target,
        Jsonb(msgspec.to_builtins(dict(before))) if before is not None else None,
        Jsonb(msgspec.to_builtins(dict(after))) if after is not None else None,
    )


async def record(
    conn: AsyncConnection[Any],
    action: str,
    target: str,
    before: JsonRow | None,
    after: JsonRow | None,
    *,
    who: str = ACTOR,
) -> None:
    """Append one audit row on ``conn``: call it inside the transaction of the change."""
    await conn.execute(_INSERT, _params(action, target, before, after, who))


def record_sync(
    conn: psycopg.Connection[Any],
    action: str,
    target: str,
    before: JsonRow | None,
    after: JsonRow | None,
    *,
    who: str = CLI_ACTOR,
) -> None:
    """:func:`record` for the synchronous connections of the command-line tools."""
    conn.execute(_INSERT, _params(action, target, before, after, who))


class AuditOut(msgspec.Struct, kw_only=True):
    """One audit row: who did what to which target, with the row before and after."""

    id: int
    at: datetime
    who: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


_COLUMNS = "id, at, who, action, target, before, after"
_AFTER = sql.SQL("at <= %s AND (at < %s OR id < %s)")

ActionPrefix = Annotated[
    str | None,
    QueryParameter(
        max_length=100,
        description="Only actions starting with this text: `key.` for key.create and key.revoke,"
        " `agent.retire` for one action.",
    ),
]
Target = Annotated[
    str | None,
    QueryParameter(max_length=300, description="Only this target, e.g. `agent:agt_…`, `policy`."),
]
Since = Annotated[
    datetime | None,
    QueryParameter(description="Inclusive lower bound on `at` (ISO 8601 with a zone)."),
]
Until = Annotated[
    datetime | None,
    QueryParameter(description="Exclusive upper bound on `at` (ISO 8601 with a zone)."),
]


class AuditController(Controller):
    """The audit trail of management changes, newest first."""

    path = "/audit"
    tags = ["audit"]

    @get(
        "/",
        operation_id="listAudit",
        responses=error_responses(400, 401),
        response_headers=PAGE_HEADERS,
    )
    async def list_audit(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        action: ActionPrefix = None,
        target: Target = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = LIMIT_DEFAULT,
        cursor: CursorParam = None,
    ) -> Response[list[AuditOut]]:
        """Audit rows newest first by (``at``, ``id``), as a bare JSON array.

        Filters combine; the total is in ``X-Total-Count``; a full page carries ``X-Next-Cursor``
        (and ``Link``) for the next one, as the event lists do.
        """
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise bad_request(name, "timestamp needs a time zone (e.g. Z)")
        conds: list[sql.Composable] = []
        params: list[Any] = []
        if action is not None:
            conds.append(sql.SQL("starts_with(action, %s)"))
            params.append(action)
        if target is not None:
            conds.append(sql.SQL("target = %s"))
            params.append(target)
        if since is not None:
            conds.append(sql.SQL("at >= %s"))
            params.append(since)
        if until is not None:
            conds.append(sql.SQL("at < %s"))
            params.append(until)
        page_conds, page_params = list(conds), list(params)
        if cursor is not None:
            c = decode_cursor(cursor)
            if not c.id.isdigit() or len(c.id) > 19:
                raise bad_request("cursor", "not a cursor returned by this API")
            page_conds.append(_AFTER)
            page_params += [c.timestamp, c.timestamp, int(c.id)]
        page_q = sql.SQL(
            "SELECT " + _COLUMNS + " FROM audit_log WHERE {} ORDER BY at DESC, id DESC LIMIT %s"
        ).format(sql.SQL(" AND ").join(page_conds or [sql.SQL("TRUE")]))
        count_q = sql.SQL("SELECT count(*) FROM audit_log WHERE {}").format(
            sql.SQL(" AND ").join(conds or [sql.SQL("TRUE")])
        )
        async with pool.connection() as conn, conn.pipeline():
            page_cur = await conn.execute(page_q, [*page_params, limit])
            count_cur = await conn.execute(count_q, params)
            rows = await page_cur.fetchall()
            count_row = await count_cur.fetchone()
        out = [AuditOut(**dict(zip(_COLUMNS.split(", "), r, strict=True))) for r in rows]
        next_cursor = encode_cursor(out[-1].at, str(out[-1].id)) if len(out) == limit else None
        total = int(count_row[0]) if count_row else 0
        return Response(out, headers=page_headers(request, total, next_cursor))
