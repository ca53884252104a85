"""The scoring router: controllers, the `X-API-Key` guard and the service as a dependency.

Built around one `ScoringService` here, so the service never imports its controllers (they import
it, for the dependency's type). The router registers the app-wide error mapping of api/errors.py
too, so its routes answer the same bodies whichever app mounts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Router
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from api.actions.admin import AdminScoresController
from api.actions.controllers import EventsController, ScoresController
from api.actions.service import ScoringService
from api.errors import handle_exception


def scoring_router(
    service: ScoringService, *, admin_guards: Sequence[Guard] | None = None
) -> Router:
    """`POST /events`, `/events/batch` and `/scores/...`, guarded by `service.guard`; with
    `admin_guards` (the management API's own, api/app.py), also `/api/v1/scores…` (every
    customer, behind those guards: admin.py)."""

    # Closures, not bound methods: Litestar deep-copies routers, and a bound method would drag a
    # copy of the service (locks, pool) along.
    def provide_service() -> ScoringService:
        return service

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], h: BaseRouteHandler) -> None:
        await service.guard(connection, h)

    keyed = Router(
        path="/",
        route_handlers=[EventsController, ScoresController],
        guards=[guard],
        tags=["action risk scoring"],
    )
    return Router(
        path="/",
        route_handlers=[
            keyed,
            *(
                [
                    Router(
                        path="/", route_handlers=[AdminScoresController], guards=list(admin_guards)
                    )
                ]
                if admin_guards is not None
                else []
            ),
        ],
        dependencies={"scoring": Provide(provide_service, sync_to_thread=False)},
        exception_handlers={Exception: handle_exception},
    )
