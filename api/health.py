"""``/health`` (the process is up) and ``/ready`` (it can reach PostgreSQL); no auth."""

from __future__ import annotations

import psycopg
from litestar import get
from psycopg_pool import PoolTimeout

from api.errors import ApiError, error_responses
from api.events import PoolDep
from api.schemas import HealthOut

READY_TIMEOUT = 2.0


@get("/health", operation_id="health", tags=["health"], sync_to_thread=False)
def health() -> HealthOut:
    """Liveness: 200 while the process answers, whatever the database does."""
    return HealthOut(status="ok")


@get("/ready", operation_id="ready", tags=["health"], responses=error_responses(503))
async def ready(pool: PoolDep) -> HealthOut:
    """Readiness: 200 when ``SELECT 1`` succeeds, 503 while the database is unreachable."""
    try:
        async with pool.connection(timeout=READY_TIMEOUT) as conn:
            await conn.execute("SELECT 1")
    except (PoolTimeout, psycopg.Error) as e:
        raise ApiError(503, "database unreachable") from e
    return HealthOut(status="ok", database="ok")
