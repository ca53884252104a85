"""``/api/v1/budgets``: token and USD limits per agent or for all agents, daily or monthly.

A change is one statement on ``budgets`` plus its ``audit_log`` row (``api.audit.record``), in
one transaction; the ``budgets_notify`` trigger (sql/007) announces it on ``govrix_budgets`` and
every proxy reloads its limits at once (within a second, measured in
tests/test_api_budgets.py). SQL on the table stays possible: the trigger fires for it too.

What an answer says about usage, in the budget's unit (tokens, or dollars):

- ``spent``: settled usage of the current period, as the proxies last synced it (they add their
  deltas to ``budget_usage`` about once a second).
- ``reserved``: what calls in flight hold, as each proxy instance published it at its last sync
  (``budget_reservations``; an instance silent for 10 s counts for nothing).
- ``leased``: what proxy instances hold on lease (``budget_leases``, unexpired): the room each may
  admit calls against without asking the database (addon/budgets/leases.py). It is part of
  ``remaining``, not spent: an instance returns what it does not use, and a lease of a stopped
  instance expires within seconds. With one instance it is what that instance holds.
- ``remaining``: ``max(limit - spent - reserved, 0)``; ``period_ends_at``: next UTC midnight, or the
  first of next month.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from psycopg import AsyncConnection, errors, sql

from api import audit
from api.errors import ApiError, error_responses, not_found
from api.events import Limit, Offset, PoolDep
from api.pagination import LIMIT_DEFAULT, PAGE_HEADERS, fetch_page, page_headers

Scope = Literal["global", "agent"]
Period = Literal["daily", "monthly"]
Metric = Literal["tokens", "usd"]
#: Largest limit accepted (``numeric(20, 6)`` holds 14 integer digits).
LIMIT_MAX = 10**13
#: A reservation row older than this belongs to an instance that stopped syncing.
RESERVATION_TTL_S = 10


class BudgetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/budgets``. ``agent_id`` is required for ``scope: agent`` and
    forbidden for ``global``; ``limit`` is whole tokens, or dollars with at most 6 decimals."""

    scope: Scope
    period: Period
    metric: Metric
    limit: int | float
    agent_id: str | None = None
    enabled: bool = True


class BudgetPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PATCH /api/v1/budgets/{id}``: any subset of the fields; the result must be valid."""

    scope: Scope | msgspec.UnsetType = msgspec.UNSET
    agent_id: str | msgspec.UnsetType | None = msgspec.UNSET
    period: Period | msgspec.UnsetType = msgspec.UNSET
    metric: Metric | msgspec.UnsetType = msgspec.UNSET
    limit: int | float | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class BudgetOut(msgspec.Struct, kw_only=True):
    """One budget and its current period's usage (tokens, or dollars for ``metric: usd``)."""

    id: int
    scope: str
    agent_id: str | None
    period: str
    metric: str
    # JSON numbers: whole tokens stay integers when encoded (a ``int | float`` annotation would
    # publish ``oneOf: [integer, number]``, which 0.0 or 10 matches twice).
    limit: float
    enabled: bool
    spent: float
    reserved: float
    leased: float
    remaining: float
    period_starts_at: datetime
    period_ends_at: datetime
    created_at: datetime
    updated_at: datetime


_COLUMNS = "id, scope, agent_id, period, metric, limit_value, enabled, created_at, updated_at"
_Row = tuple[Any, ...]


def _period_bounds(period: str, today: date) -> tuple[date, datetime, datetime]:
    start = today if period == "daily" else today.replace(day=1)
    days = 1 if period == "daily" else calendar.monthrange(start.year, start.month)[1]
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return start, begin, begin + timedelta(days=days)


def _units(metric: str, value: Decimal | int) -> int:
    """Tokens, or micro-dollars: the proxies' integer units."""
    return int(Decimal(value) * 1_000_000) if metric == "usd" else int(value)


def _display(metric: str, units: int) -> int | float:
    return units / 1_000_000 if metric == "usd" else units


def _limit_value(metric: str, limit: int | float) -> Decimal:
    """The stored ``numeric`` limit, or 422 naming ``limit``."""
    if isinstance(limit, bool) or limit != limit or limit < 0 or limit > LIMIT_MAX:
        raise ApiError(422, f"invalid limit: must be between 0 and {LIMIT_MAX}", field="limit")
    value = Decimal(str(limit))
    if metric == "tokens" and value != value.to_integral_value():
        raise ApiError(422, "invalid limit: a tokens limit is a whole number", field="limit")
    if value != value.quantize(Decimal("0.000001")):
        raise ApiError(
            422, "invalid limit: dollars have at most 6 decimals (micro-dollars)", field="limit"
        )
    return value


def _check_scope(scope: str, agent_id: str | None) -> None:
    if scope == "agent" and not agent_id:
        raise ApiError(422, "invalid agent_id: required when scope is agent", field="agent_id")
    if scope == "global" and agent_id is not None:
        raise ApiError(422, "invalid agent_id: must be null when scope is global", field="agent_id")
    if agent_id is not None and (len(agent_id) > 200 or "\x00" in agent_id):
        raise ApiError(400, "invalid agent_id: at most 200 characters, no NUL", field="agent_id")


def _as_json(row: _Row) -> dict[str, Any]:
    """A budget row as stored, for the audit log (the limit as its exact decimal text)."""
    return {
        "id": row[0],
        "scope": row[1],
        "agent_id": row[2],
        "period": row[3],
        "metric": row[4],
        "limit": str(row[5]),
        "enabled": row[6],
    }


async def _with_usage(conn: AsyncConnection[Any], rows: list[_Row]) -> list[BudgetOut]:
    """Attach each budget's current-period spent, reserved and leased (three queries for the
    page)."""
    today = datetime.now(UTC).date()
    keys: list[tuple[str, str, date]] = []
    for r in rows:
        usage_key = "global" if r[2] is None else "agent:" + r[2]
        keys.append((usage_key, r[3], _period_bounds(r[3], today)[0]))
    spent: dict[tuple[str, str, date], tuple[int, int]] = {}
    held: dict[tuple[str, str, date], tuple[int, int]] = {}
    leased: dict[tuple[str, str, date], tuple[int, int]] = {}
    if keys:
        wanted = [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]
        cur = await conn.execute(
            "SELECT u.usage_key, u.period, u.period_start, u.tokens, u.usd_micros "
            "FROM budget_usage u JOIN unnest(%s::text[], %s::text[], %s::date[]) AS k(a, b, c) "
            "ON u.usage_key = k.a AND u.period = k.b AND u.period_start = k.c",
            wanted,
        )
        spent = {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT r.usage_key, r.period, r.period_start, sum(r.tokens), sum(r.usd_micros) "
            "FROM budget_reservations r "
            "JOIN unnest(%s::text[], %s::text[], %s::date[]) AS k(a, b, c) "
            "ON r.usage_key = k.a AND r.period = k.b AND r.period_start = k.c "
            "WHERE r.updated_at > now() - make_interval(secs => %s) "
            "GROUP BY r.usage_key, r.period, r.period_start",
            [*wanted, RESERVATION_TTL_S],
        )
        held = {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT l.usage_key, l.period, l.period_start, sum(l.tokens), sum(l.usd_micros) "
            "FROM budget_leases l "
            "JOIN unnest(%s::text[], %s::text[], %s::date[]) AS k(a, b, c) "
            "ON l.usage_key = k.a AND l.period = k.b AND l.period_start = k.c "
            "WHERE l.expires_at > now() "
            "GROUP BY l.usage_key, l.period, l.period_start",
            wanted,
        )
        leased = {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in await cur.fetchall()}
    out = []
    for r, key in zip(rows, keys, strict=True):
        metric = r[4]
        pick = 0 if metric == "tokens" else 1
        limit = _units(metric, r[5])
        s = spent.get(key, (0, 0))[pick]
        h = held.get(key, (0, 0))[pick]
        _, begins, ends = _period_bounds(r[3], today)
        out.append(
            BudgetOut(
                id=r[0],
                scope=r[1],
                agent_id=r[2],
                period=r[3],
                metric=metric,
                limit=_display(metric, limit),
                enabled=r[6],
                spent=_display(metric, s),
                reserved=_display(metric, h),
                leased=_display(metric, leased.get(key, (0, 0))[pick]),
                remaining=_display(metric, max(limit - s - h, 0)),
                period_starts_at=begins,
                period_ends_at=ends,
                created_at=r[7],
                updated_at=r[8],
            )
        )
    return out


async def _audit(
    conn: AsyncConnection[Any], action: str, budget_id: int, before: _Row | None, after: _Row | None
) -> None:
    await audit.record(
        conn,
        action,
        f"budget:{budget_id}",
        _as_json(before) if before is not None else None,
        _as_json(after) if after is not None else None,
    )


def _duplicate() -> ApiError:
    return ApiError(
        409, "a budget with this scope, agent_id, period and metric already exists", field="scope"
    )


class BudgetController(Controller):
    """Budgets, their usage in the current period, and every change audited."""

    path = "/budgets"
    tags = ["budgets"]

    @get(
        "/",
        operation_id="listBudgets",
        responses=error_responses(400, 401),
        response_headers=PAGE_HEADERS[:1],
    )
    async def list_budgets(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        scope_: Annotated[
            Scope | None, QueryParameter(name="scope", description="Only this scope.")
        ] = None,
        agent_id: Annotated[
            str | None, QueryParameter(max_length=200, description="Only this agent's budgets.")
        ] = None,
        enabled: Annotated[bool | None, QueryParameter(description="Only (not) enabled.")] = None,
        limit: Limit = LIMIT_DEFAULT,
        offset: Offset = 0,
    ) -> Response[list[BudgetOut]]:
        """List budgets by id, each with its current period's ``spent``, ``reserved`` and
        ``remaining``; the total is in ``X-Total-Count``."""
        conds: list[sql.Composable] = []
        params: list[Any] = []
        for column, value in (("scope", scope_), ("agent_id", agent_id), ("enabled", enabled)):
            if value is not None:
                conds.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        where = sql.SQL(" AND ").join(conds) if conds else sql.SQL("TRUE")
        page_q = sql.SQL(
            "SELECT " + _COLUMNS + " FROM budgets WHERE {} ORDER BY id LIMIT %s OFFSET %s"
        ).format(where)
        count_q = sql.SQL("SELECT count(*) FROM budgets WHERE {}").format(where)
        rows, total = await fetch_page(pool, page_q, count_q, params, limit, offset)
        async with pool.connection() as conn:
            budgets = await _with_usage(conn, rows)
        return Response(budgets, headers=page_headers(request, total, None))

    @post(
        "/",
        operation_id="createBudget",
        status_code=201,
        responses=error_responses(400, 401, 409, 422),
    )
    async def create_budget(self, pool: PoolDep, data: JSONBody[BudgetIn]) -> BudgetOut:
        """Create a budget; every proxy applies it within a second (``NOTIFY govrix_budgets``).

        400 for a malformed body or an unknown field, 422 for an inconsistent one (``agent_id``
        with ``scope``, a fractional tokens limit, more than 6 decimals of dollars), 409 when a
        budget with the same scope, agent, period and metric exists (``PATCH`` it instead).
        """
        _check_scope(data.scope, data.agent_id)
        value = _limit_value(data.metric, data.limit)
        async with pool.connection() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        "INSERT INTO budgets (scope, agent_id, period, metric, limit_value, enabled)"
                        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING " + _COLUMNS,
                        (data.scope, data.agent_id, data.period, data.metric, value, data.enabled),
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    await _audit(conn, "budget.create", row[0], None, row)
            except errors.UniqueViolation:
                raise _duplicate() from None
            return (await _with_usage(conn, [row]))[0]

    @get("/{budget_id:int}", operation_id="getBudget", responses=error_responses(400, 401, 404))
    async def get_budget(self, pool: PoolDep, budget_id: FromPath[int]) -> BudgetOut:
        """One budget with its usage; 404 ``{"error": "budget not found"}``."""
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT " + _COLUMNS + " FROM budgets WHERE id = %s", (budget_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise not_found("budget")
            return (await _with_usage(conn, [row]))[0]

    @patch(
        "/{budget_id:int}",
        operation_id="updateBudget",
        responses=error_responses(400, 401, 404, 409, 422),
    )
    async def update_budget(
        self, pool: PoolDep, budget_id: FromPath[int], data: JSONBody[BudgetPatch]
    ) -> BudgetOut:
        """Change any of ``scope``, ``agent_id``, ``period``, ``metric``, ``limit``, ``enabled``.

        The result is validated as a whole (422 as for ``POST``); usage already counted under the
        budget's scope and period stays counted (it belongs to the agent, not to the row).
        """
        fields: dict[str, Any] = {f: getattr(data, f) for f in BudgetPatch.__struct_fields__}
        given = {f: v for f, v in fields.items() if v is not msgspec.UNSET}
        if not given:
            raise ApiError(400, "invalid body: give at least one field", field="body")
        async with pool.connection() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        "SELECT " + _COLUMNS + " FROM budgets WHERE id = %s FOR UPDATE",
                        (budget_id,),
                    )
                    before = await cur.fetchone()
                    if before is None:
                        raise not_found("budget")
                    scope = str(given.get("scope", before[1]))
                    agent_id: str | None = given.get("agent_id", before[2])
                    if "scope" in given and given["scope"] == "global" and "agent_id" not in given:
                        agent_id = None  # narrowing to global drops the agent
                    metric = str(given.get("metric", before[4]))
                    _check_scope(scope, agent_id)
                    value = (
                        _limit_value(metric, given["limit"])
                        if "limit" in given
                        else _limit_value(metric, _stored_number(before[5]))
                    )
                    cur = await conn.execute(
                        "UPDATE budgets SET scope = %s, agent_id = %s, period = %s, metric = %s,"
                        " limit_value = %s, enabled = %s, updated_at = now() WHERE id = %s"
                        " RETURNING " + _COLUMNS,
                        (
                            scope,
                            agent_id,
                            given.get("period", before[3]),
                            metric,
                            value,
                            given.get("enabled", before[6]),
                            budget_id,
                        ),
                    )
                    after = await cur.fetchone()
                    assert after is not None
                    await _audit(conn, "budget.update", budget_id, before, after)
            except errors.UniqueViolation:
                raise _duplicate() from None
            return (await _with_usage(conn, [after]))[0]

    @delete(
        "/{budget_id:int}",
        operation_id="deleteBudget",
        status_code=204,
        responses=error_responses(400, 401, 404),
    )
    async def delete_budget(self, pool: PoolDep, budget_id: FromPath[int]) -> None:
        """Delete a budget; proxies stop applying it within a second. Its usage rows stay."""
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM budgets WHERE id = %s RETURNING " + _COLUMNS, (budget_id,)
            )
            before = await cur.fetchone()
            if before is None:
                raise not_found("budget")
            await _audit(conn, "budget.delete", budget_id, before, None)


def _stored_number(value: Decimal) -> int | float:
    """A stored limit as the number a client would have sent."""
    return int(value) if value == value.to_integral_value() else float(value)
