"""Every failure leaves as JSON ``{"error": "..."}`` (DESIGN.md §7), mapped here in one place.

Domain code raises :class:`ApiError`; Litestar's own exceptions (validation, 401, 404 for unknown
routes, 405) and anything unexpected pass through :func:`handle_exception`, so no handler ever
answers with Litestar's default ``{"status_code", "detail", "extra"}`` body. Both apps (the main
API and the scoring-only app, api/actions/scoring_app.py) and the scoring router register this
one handler, so every route answers the same :class:`~api.schemas.ErrorBody` (seeds 000/001:
``{"error": "event not found"}``; ``field`` added when one input is at fault).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from psycopg_pool import PoolTimeout

from api.schemas import ErrorBody

log = logging.getLogger("govrix.api")
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")

_DESCRIPTIONS = {
    400: "Invalid input; `field` names the parameter or body field at fault",
    401: "Missing or wrong `Authorization: Bearer` key",
    404: "Not found",
    409: "Conflict",
    422: "Unprocessable",
    429: "Too many requests",
    503: "Database unreachable",
}


class ApiError(HTTPException):
    """A domain error: HTTP status, message, optionally the field at fault and extra headers
    (``Retry-After`` on a 429)."""

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


def not_found(what: str) -> ApiError:
    """The seeds' 404 body: ``{"error": "event not found"}``."""
    return ApiError(404, f"{what} not found")


def bad_request(field: str, message: str) -> ApiError:
    """400 naming the field at fault (``limit``, ``body``, ``events[3].action``)."""
    return ApiError(400, f"invalid {field}: {message}", field=field)


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error codes a handler can answer, all with :class:`ErrorBody`."""
    return {
        c: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS.get(c, "Error"))
        for c in codes
    }


def _validation_error(exc: ValidationException) -> ErrorBody:
    """Litestar lists problems in ``extra``; name the first one (the field and where it was)."""
    extra = exc.extra
    first: Mapping[str, Any] | None = None
    if isinstance(extra, list) and extra and isinstance(extra[0], Mapping):
        first = extra[0]
    elif isinstance(extra, Mapping):
        first = extra
    if first is None or "key" not in first:
        message = str(first.get("message")) if first else exc.detail
        return ErrorBody(error=f"invalid request: {message}")
    key = str(first["key"]).rstrip("_")  # ``from_`` is the query parameter ``from``
    message = str(first.get("message", "invalid value"))
    source = first.get("source")
    source = getattr(source, "value", source)  # ParamType is an enum
    if key == "data":  # the body as a whole: name the offending field when msgspec does
        unknown = _UNKNOWN_FIELD.search(message)
        if unknown:
            key = unknown.group(1)
            return ErrorBody(error=f"invalid {key}: unknown field", field=key)
        return ErrorBody(error=f"invalid body: {message}", field="body")
    where = f"{source} parameter " if source and source != "body" else ""
    return ErrorBody(error=f"invalid {where}{key}: {message}", field=key)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """The single exception handler of both apps (registered for ``Exception``)."""
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        status, body = exc.status_code, ErrorBody(error=exc.detail, field=exc.field)
        headers = dict(exc.headers or {})
    elif isinstance(exc, ValidationException):
        status, body = 400, _validation_error(exc)
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        headers = dict(exc.headers or {})
        detail = exc.detail or "error"
        if status == 400 and "malformed" in detail:  # the body is not JSON at all
            body = ErrorBody(error=f"invalid body: {detail}", field="body")
        elif status in _PHRASES and detail == _PHRASES[status]:
            body = ErrorBody(error=detail.lower())  # "Not Found" -> "not found"
        else:
            body = ErrorBody(error=detail[:1].lower() + detail[1:])
    elif isinstance(exc, psycopg.DataError):
        # Our SQL is fixed, so a data exception comes from a value the client sent (e.g. a NUL
        # byte in a text parameter): a 400, with PostgreSQL's first line and no value echoed.
        status = 400
        body = ErrorBody(
            error=f"invalid input: {str(exc).splitlines()[0] if str(exc) else 'bad value'}"
        )
    elif isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        status, body = 503, ErrorBody(error="database unreachable")
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        status, body = HTTP_500_INTERNAL_SERVER_ERROR, ErrorBody(error="internal server error")
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)
