"""Errors of the scoring routes, mapped to JSON `{"error": ..., "field": ...}` in one place.

The handler is registered on the scoring router itself, so these routes answer the same bodies
whichever app mounts them.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from api.actions.schemas import ErrorOut

log = logging.getLogger("govrix.actions")


class ActionsError(HTTPException):
    """A domain error: status, message, optionally the field at fault and extra headers."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=message, status_code=status_code, headers=headers)
        self.field = field


def bad_request(field: str, message: str) -> ActionsError:
    """400 naming the field (``events[3].action``, ``body``, ``page``)."""
    return ActionsError(400, f"invalid {field}: {message}", field=field)


def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorOut]:
    """The exception handler of the scoring router."""
    headers: dict[str, str] = {}
    if isinstance(exc, ActionsError):
        status, body = exc.status_code, ErrorOut(error=exc.detail, field=exc.field)
        headers = dict(exc.headers or {})
    elif isinstance(exc, ValidationException):  # query/path parameters
        extra = exc.extra
        first = extra[0] if isinstance(extra, list) and extra else {}
        key = str(first.get("key", "")) if isinstance(first, dict) else ""
        msg = str(first.get("message", exc.detail)) if isinstance(first, dict) else exc.detail
        status = 400
        body = ErrorOut(error=f"invalid {key or 'request'}: {msg}", field=key or None)
    elif isinstance(exc, HTTPException):
        status, body = exc.status_code, ErrorOut(error=exc.detail.lower())
        headers = dict(exc.headers or {})
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        status, body = 500, ErrorOut(error="internal server error")
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)
