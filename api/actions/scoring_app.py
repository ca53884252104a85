"""The scoring routes as an app of their own (tests, benchmarks, a scoring-only deployment).

GOVRIX_DATABASE_URL=... python -m api.actions [--port 4002]
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from api.actions.config import Settings
from api.actions.routes import scoring_router
from api.actions.service import ScoringService
from api.db import make_pool
from api.errors import handle_exception


def create_app(database_url: str, settings: Settings | None = None) -> Litestar:
    """An app serving only the scoring routes; the pool is born in its lifespan."""
    service = ScoringService(settings or Settings.from_env())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = make_pool(
            database_url, max_size=max(4, service.settings.workers + 8), name="govrix-scoring"
        )
        await pool.open(wait=True)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return Litestar(
        route_handlers=[scoring_router(service)],  # no management API here
        lifespan=[lifespan, service.lifespan],
        exception_handlers={Exception: handle_exception},
    )


def main(argv: list[str] | None = None) -> None:
    """Run with uvicorn (one process)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("GOVRIX_DATABASE_URL"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4002)
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or GOVRIX_DATABASE_URL is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(
        create_app(args.database_url),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
