"""Routes of action risk scoring (DESIGN.md §8): `/events`, `/events/batch`, `/scores/...`.

Bodies are read raw and validated by the engine's decoder, so a 400 names the exact field
(`target.sensitivity_level`, `events[3].action`) and the stored jsonb is the event as sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter

from api.actions import score_queries
from api.actions.schemas import (
    MAX_BATCH,
    BatchAccepted,
    BatchIn,
    EventQueued,
    EventScored,
    ScoreDetail,
    ScoreSummary,
)
from api.actions.service import ScoringService
from api.actions.store import Principal
from api.errors import ApiError, bad_request, error_responses
from api.scoring import ActionEvent, ValidationError, decode_action_event
from api.scoring.bands import RiskLevel

_BATCH = msgspec.json.Decoder(BatchIn)
ScoringDep = NamedDependency[ScoringService]  # provided by routes.scoring_router as ``scoring``


def _caller(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.state.govrix_principal  # set by ScoringService.guard
    return principal


def _own(caller: Principal, customer_id: str) -> None:
    if caller.customer_id != customer_id:
        raise ApiError(403, "this API key may only read its own customer's scores")


class EventsController(Controller):
    """Ingestion: one event scored now, or up to 1,000 queued for the workers."""

    path = "/events"

    @post(
        "/",
        operation_id="scoreEvent",
        status_code=200,
        responses={
            202: ResponseSpec(
                data_container=EventQueued, description="Held by a batch, not scored yet"
            ),
            **error_responses(400, 401, 429, 503),
        },
    )
    async def score_event(
        self, request: Request[Any, Any, Any], scoring: ScoringDep
    ) -> Response[EventScored | EventQueued]:
        """Validate, store and score one action. Idempotent on `event_id`: a repeat answers the
        stored score (200, same body), or 202 `pending`/`failed` when a batch holds the id."""
        raw = await request.body()
        try:
            event = decode_action_event(raw)
        except ValidationError as e:
            raise bad_request(e.path or "body", e.message) from e
        result = await scoring.score_one(_caller(request), event, raw)
        return Response(result, status_code=200 if isinstance(result, EventScored) else 202)

    @post(
        "/batch",
        operation_id="acceptEventBatch",
        status_code=202,
        responses=error_responses(400, 401, 429, 503),
    )
    async def accept_batch(
        self, request: Request[Any, Any, Any], scoring: ScoringDep
    ) -> BatchAccepted:
        """Validate every event (400 names `events[i].field`), store and queue them all in one
        transaction, answer 202 at once; scores appear under `/scores` as workers finish."""
        try:
            batch = _BATCH.decode(await request.body())
        except msgspec.ValidationError as e:
            raise bad_request("events", str(e).split(" - at ")[0]) from e
        except msgspec.DecodeError as e:
            raise bad_request("body", f"malformed JSON: {e}") from e
        if not 1 <= len(batch.events) <= MAX_BATCH:
            raise bad_request("events", f"must hold 1 to {MAX_BATCH} events")
        events: list[tuple[ActionEvent, bytes]] = []
        for i, item in enumerate(batch.events):
            raw = bytes(item)
            try:
                events.append((decode_action_event(raw), raw))
            except ValidationError as e:
                raise bad_request(
                    f"events[{i}].{e.path}" if e.path else f"events[{i}]", e.message
                ) from e
        return await scoring.accept_batch(_caller(request), events)


class ScoresController(Controller):
    """Reading scores; a key reads its own customer's scores only (403 otherwise)."""

    path = "/scores"

    @get(
        "/event/{event_id:str}",
        operation_id="getScore",
        responses=error_responses(401, 404, 429, 503),
    )
    async def get_score(
        self, request: Request[Any, Any, Any], scoring: ScoringDep, event_id: FromPath[str]
    ) -> ScoreDetail:
        """One score with its full decomposition; 404 when the caller's customer has none."""
        caller = _caller(request)
        async with scoring.pool.connection() as conn:
            detail = await score_queries.score_detail(conn, caller.customer_id, event_id)
        if detail is None:
            raise ApiError(404, "score not found")
        return detail

    @get(
        "/{customer_id:str}",
        operation_id="listScores",
        responses=error_responses(400, 401, 403, 429, 503),
    )
    async def list_scores(
        self,
        request: Request[Any, Any, Any],
        scoring: ScoringDep,
        customer_id: FromPath[str],
        page: Annotated[int, QueryParameter(ge=1, description="1-based page")] = 1,
        per_page: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        risk_level: FromQuery[RiskLevel | None] = None,
        from_date: Annotated[
            datetime | None, QueryParameter(description="scored_at >= this")
        ] = None,
        to_date: Annotated[datetime | None, QueryParameter(description="scored_at < this")] = None,
    ) -> Response[list[ScoreDetail]]:
        """Scores newest first (by `scored_at`) as a bare JSON array; `X-Total-Count` holds
        the number matching the filters."""
        _own(_caller(request), customer_id)
        async with scoring.pool.connection() as conn:
            items, total = await score_queries.list_scores(
                conn,
                customer_id,
                page=page,
                per_page=per_page,
                risk_level=risk_level,
                from_date=from_date,
                to_date=to_date,
            )
        return Response(items, headers={"X-Total-Count": str(total)})

    @get(
        "/{customer_id:str}/summary",
        operation_id="scoreSummary",
        responses=error_responses(400, 401, 403, 429, 503),
    )
    async def summary(
        self,
        request: Request[Any, Any, Any],
        scoring: ScoringDep,
        customer_id: FromPath[str],
        from_date: FromQuery[datetime | None] = None,
        to_date: FromQuery[datetime | None] = None,
    ) -> ScoreSummary:
        """Total, average score, count per risk level, and the queue backlog."""
        _own(_caller(request), customer_id)
        async with scoring.pool.connection() as conn:
            return await score_queries.summary(conn, customer_id, from_date, to_date)
