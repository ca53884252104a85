"""Keyset cursors and the paging headers (``X-Total-Count``, ``X-Next-Cursor``, ``Link``).

A cursor is the (timestamp, id) of the last row of a page, opaque to clients: base64url of
``"<epoch microseconds>|<id>"``. Deep pages then cost what page 1 costs, where ``offset`` would
walk and discard every earlier row.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from litestar import Request
from litestar.datastructures import ResponseHeader
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from api.errors import bad_request

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LIMIT_DEFAULT = 50
LIMIT_MAX = 1000

# Documented in OpenAPI on every list route (documentation only: set by ``page_headers``).
PAGE_HEADERS = [
    ResponseHeader(
        name="X-Total-Count",
        description="Rows matching the filters (all pages).",
        documentation_only=True,
    ),
    ResponseHeader(
        name="X-Next-Cursor",
        description="Cursor of the next page, when this page is full.",
        documentation_only=True,
    ),
    ResponseHeader(
        name="Link",
        description='`<url>; rel="next"` when this page is full.',
        documentation_only=True,
    ),
]


class Cursor:
    """The position after which the next page starts."""

    __slots__ = ("id", "timestamp")

    def __init__(self, timestamp: datetime, id: str) -> None:
        self.timestamp = timestamp
        self.id = id


def encode_cursor(timestamp: datetime, id: str) -> str:
    delta = timestamp - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raw = f"{micros}|{id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    """Parse a cursor from a client; 400 naming ``cursor`` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        micros_s, _, id = raw.partition("|")
        micros = int(micros_s)
        if not id or len(id) > 64:
            raise ValueError("no id")
        return Cursor(_EPOCH + timedelta(microseconds=micros), id)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError) as e:
        raise bad_request("cursor", "not a cursor returned by this API") from e


def page_headers(
    request: Request[Any, Any, Any], total: int, next_cursor: str | None
) -> dict[str, str]:
    """``X-Total-Count`` always; ``X-Next-Cursor`` and an RFC 8288 ``Link`` when there is more."""
    headers = {"X-Total-Count": str(total)}
    if next_cursor is not None:
        params = {k: v for k, v in request.query_params.items() if k not in ("cursor", "offset")}
        params["cursor"] = next_cursor
        url = request.url.with_replacements(query=urlencode(params))
        headers["X-Next-Cursor"] = next_cursor
        headers["Link"] = f'<{url}>; rel="next"'
    return headers


async def fetch_page(
    pool: AsyncConnectionPool[Any],
    page_q: sql.Composed,
    count_q: sql.Composed,
    params: list[Any],
    limit: int,
    offset: int,
) -> tuple[list[tuple[Any, ...]], int]:
    """One offset page and the total, pipelined in one round trip."""
    async with pool.connection() as conn, conn.pipeline():
        page_cur = await conn.execute(page_q, [*params, limit, offset])
        count_cur = await conn.execute(count_q, params)
        rows = await page_cur.fetchall()
        count_row = await count_cur.fetchone()
    return rows, int(count_row[0]) if count_row else 0
