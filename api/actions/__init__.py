"""Action risk scoring over HTTP (DESIGN.md §8): ingestion, durable scoring queue, scores API.

Mount in an app whose lifespan puts its pool in ``app.state.pool``::

    from api.actions import ScoringService, scoring_router
    scoring = ScoringService.from_env()
    Litestar(route_handlers=[..., scoring_router(scoring)], lifespan=[lifespan, scoring.lifespan],
             exception_handlers={Exception: api.errors.handle_exception}, ...)

(or call ``await scoring.start(pool)`` / ``await scoring.stop()`` from an existing lifespan).
Routes: ``POST /events``, ``POST /events/batch``, ``GET /scores/{customer_id}``,
``GET /scores/{customer_id}/summary``, ``GET /scores/event/{event_id}``; auth by ``X-API-Key``.
"""

from api.actions.config import ConfigError, RateLimit, Settings
from api.actions.routes import scoring_router
from api.actions.service import ScoringService

__all__ = ["ConfigError", "RateLimit", "ScoringService", "Settings", "scoring_router"]
