"""Every customer's scores for the operator: ``/api/v1/scores…``, behind the management API's key.

The routes of ``/scores/…`` answer a customer's ``X-API-Key`` and show that customer only. The
operator (the console, a script with ``GOVRIX_API_KEY``) reads across customers here instead:
the same queries (score_queries.py), no rate limit, and exactly the auth of the app's other
``/api/v1`` routes: api/app.py hands its own guards (the bearer check, or none with
``--insecure-no-auth``) to ``scoring_router(…, admin_guards=…)``, so the two can never disagree.
An app without the management API (the scoring-only app, api/actions/scoring_app.py) passes
none and does not mount these routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter

from api.actions import score_queries
from api.actions.controllers import ScoringDep
from api.actions.schemas import CustomerSummary, ScoreDetail
from api.errors import ApiError, bad_request, error_responses
from api.events import IdFilter, Limit, Offset
from api.pagination import LIMIT_DEFAULT, PAGE_HEADERS
from api.scoring.bands import RiskLevel

MANAGEMENT_PREFIX = "/api/v1"

_TOTAL = PAGE_HEADERS[:1]  # X-Total-Count (offset pages: no cursor)


def _utc_only(**values: datetime | None) -> None:
    for name, value in values.items():
        if value is not None and value.tzinfo is None:
            raise bad_request(name, "timestamp needs a time zone (e.g. Z)")


class AdminScoresController(Controller):
    """Scores of every customer (management key); the per-customer routes are ``/scores/…``."""

    path = MANAGEMENT_PREFIX + "/scores"
    security = [{"BearerToken": []}]
    tags = ["action risk scoring"]

    @get(
        "/",
        operation_id="listAllScores",
        responses=error_responses(400, 401, 503),
        response_headers=_TOTAL,
    )
    async def list_all(
        self,
        scoring: ScoringDep,
        customer_id: IdFilter = None,
        risk_level: FromQuery[RiskLevel | None] = None,
        agent_id: IdFilter = None,
        session_id: IdFilter = None,
        from_date: Annotated[
            datetime | None, QueryParameter(description="scored_at >= this (with a zone)")
        ] = None,
        to_date: Annotated[
            datetime | None, QueryParameter(description="scored_at < this (with a zone)")
        ] = None,
        limit: Limit = LIMIT_DEFAULT,
        offset: Offset = 0,
    ) -> Response[list[ScoreDetail]]:
        """Scores newest first (by `scored_at`), every customer unless `customer_id` is given;
        `agent_id` and `session_id` filter on the scored action. Total in `X-Total-Count`."""
        _utc_only(from_date=from_date, to_date=to_date)
        async with scoring.pool.connection() as conn:
            items, total = await score_queries.list_all_scores(
                conn,
                customer_id=customer_id,
                risk_level=risk_level,
                agent_id=agent_id,
                session_id=session_id,
                from_date=from_date,
                to_date=to_date,
                limit=limit,
                offset=offset,
            )
        return Response(items, headers={"X-Total-Count": str(total)})

    @get(
        "/customers",
        operation_id="listScoreCustomers",
        responses=error_responses(400, 401, 503),
        response_headers=_TOTAL,
    )
    async def customers(
        self,
        scoring: ScoringDep,
        from_date: FromQuery[datetime | None] = None,
        to_date: FromQuery[datetime | None] = None,
    ) -> Response[list[CustomerSummary]]:
        """Each customer's summary (as `/scores/{customer_id}/summary`) and its latest score,
        for every customer with a score in the window or an action in the queue, by id."""
        _utc_only(from_date=from_date, to_date=to_date)
        async with scoring.pool.connection() as conn:
            items = await score_queries.customer_summaries(conn, from_date, to_date)
        return Response(items, headers={"X-Total-Count": str(len(items))})

    @get(
        "/{customer_id:str}/{event_id:str}",
        operation_id="getCustomerScore",
        responses=error_responses(401, 404, 503),
    )
    async def get_one(
        self, scoring: ScoringDep, customer_id: FromPath[str], event_id: FromPath[str]
    ) -> ScoreDetail:
        """One customer's score of one action, with its decomposition; 404 `score not found`."""
        async with scoring.pool.connection() as conn:
            detail = await score_queries.score_detail(conn, customer_id, event_id)
        if detail is None:
            raise ApiError(404, "score not found")
        return detail
