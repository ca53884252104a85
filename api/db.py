"""The API's connection pool and the column lists it selects (the SQL schema is the interface).

The pool is created closed and opened in the app's lifespan without waiting for connections, so
the API starts (and ``/ready`` answers 503) while PostgreSQL is away.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from api.schemas import AGENT_FIELDS, EVENT_FIELDS, SESSION_FIELDS

# How long a request waits for a pooled connection before the API answers 503.
POOL_TIMEOUT = float(os.environ.get("GOVRIX_API_POOL_TIMEOUT", "5"))


def _columns(names: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


EVENT_COLUMNS = _columns(EVENT_FIELDS)
AGENT_COLUMNS = _columns(AGENT_FIELDS)
SESSION_COLUMNS = _columns(SESSION_FIELDS)


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Metadata goes to jsonb through msgspec, like the writer's JSON columns.
    set_json_dumps(msgspec.json.encode, conn)
    set_json_loads(msgspec.json.decode, conn)  # several times faster than json.loads


def make_pool(
    conninfo: str,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    name: str = "govrix-api",
) -> AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]:
    """The one pool factory of both apps: closed (open it in the lifespan), autocommit, UTC
    timestamps (``Z`` in JSON). ``name`` is the pool's and the connections' application_name.

    No ``check`` on checkout: it would cost a round trip per request. A connection broken by a
    server restart fails one request and is discarded by the pool; ``/ready`` reports the outage.
    """
    min_size = min_size if min_size is not None else int(os.environ.get("GOVRIX_API_POOL_MIN", "2"))
    max_size = (
        max_size if max_size is not None else int(os.environ.get("GOVRIX_API_POOL_MAX", "10"))
    )
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max(min_size, max_size),
        open=False,
        timeout=POOL_TIMEOUT,
        configure=_configure,
        kwargs={
            "autocommit": True,
            "options": "-c TimeZone=UTC",
            "application_name": name,
            "connect_timeout": 5,
        },
        name=name,
    )
