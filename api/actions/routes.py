"""The scoring router: controllers, the `X-API-Key` guard and the service as a dependency.

Built around one `ScoringService` here, so the service never imports its controllers (they import
it, for the dependency's type). The router registers the app-wide error mapping of api/errors.py
too, so its routes answer the same bodies whichever app mounts them.
"""

from __future__ import annotations

from typing import Any

from litestar import Router
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler

from api.actions.controllers import EventsController, ScoresController
from api.actions.service import ScoringService
from api.errors import handle_exception


def scoring_router(service: ScoringService) -> Router:
    """`POST /events`, `/events/batch` and `/scores/...`, guarded by `service.guard`."""

    # Closures, not bound methods: Litestar deep-copies routers, and a bound method would drag a
    # copy of the service (locks, pool) along.
    def provide_service() -> ScoringService:
        return service

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], h: BaseRouteHandler) -> None:
        await service.guard(connection, h)

    return Router(
        path="/",
        route_handlers=[EventsController, ScoresController],
        guards=[guard],
        dependencies={"scoring": Provide(provide_service, sync_to_thread=False)},
        exception_handlers={Exception: handle_exception},
        tags=["action risk scoring"],
    )
