"""The console's only way to data: this same app's public ``/api/v1`` routes, called in-process.

Every read and every change the console makes goes through ``httpx.AsyncClient`` over
``httpx.ASGITransport(app=request.app)`` with the configured bearer key: no socket, but exactly
the public route, with its validation, its audit rows and its errors. So the console can do
nothing an operator's script cannot, and a bug in a route shows in both.

(The exception is the Live page's stream: ASGITransport buffers a whole response, so an endless
SSE body cannot pass through it; api/console/live.py subscribes to the stream hub instead.)
"""

from __future__ import annotations

import logging
from typing import Any, cast

import httpx
import msgspec
from litestar import Litestar

#: Not a network name: ASGITransport never resolves it. It only shows in the API's own logs.
_BASE = "http://console.internal/api/v1"
_decode = msgspec.json.Decoder().decode


def _not_ours(record: logging.LogRecord) -> bool:
    """httpx logs every request at INFO: keep that for real outbound calls (the scoring LLM
    fallback), not for a page's in-process reads, which the API's own metrics already count."""
    return "console.internal" not in str(record.args)


logging.getLogger("httpx").addFilter(_not_ours)


class ApiCallError(Exception):
    """A public route answered with an error; ``message`` is its ``{"error": ...}`` text."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.field = field


def readable(status: int, body: bytes) -> tuple[str, str | None]:
    """The message (and field) of an API error body, for a person; never the raw bytes."""
    try:
        doc = _decode(body)
    except msgspec.DecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        field = doc.get("field")
        message: str = doc["error"]
        return message[:1].upper() + message[1:], field if isinstance(field, str) else None
    return f"The API answered {status}.", None


class Page(msgspec.Struct, kw_only=True):
    """One page of a list route: the items, ``X-Total-Count`` and ``X-Next-Cursor``."""

    items: list[Any]
    total: int | None
    next_cursor: str | None


class ApiClient:
    """Calls to ``/api/v1`` on ``app`` with the bearer key; JSON in, decoded JSON out.

    An answer >= 400 raises :class:`ApiCallError` with the route's own message.
    """

    def __init__(self, app: Litestar, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        headers["User-Agent"] = "govrix-console"
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=cast(Any, app)
            ),  # Litestar's scope types are narrower
            base_url=_BASE,
            headers=headers,
            trust_env=False,  # no proxy from the environment: the transport is the app itself
            timeout=30.0,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            message, field = readable(response.status_code, response.content)
            raise ApiCallError(response.status_code, message, field)
        return response

    @staticmethod
    def _params(params: dict[str, Any]) -> dict[str, Any]:
        """Drop unset filters; booleans as the API spells them."""
        out: dict[str, Any] = {}
        for k, v in params.items():
            if v is None or v == "":
                continue
            out[k] = ("true" if v else "false") if isinstance(v, bool) else v
        return out

    async def get(self, path: str, **params: Any) -> Any:
        response = await self._send("GET", path, params=self._params(params))
        return _decode(response.content)

    async def page(self, path: str, **params: Any) -> Page:
        response = await self._send("GET", path, params=self._params(params))
        total = response.headers.get("x-total-count")
        return Page(
            items=_decode(response.content),
            total=int(total) if total and total.isdigit() else None,
            next_cursor=response.headers.get("x-next-cursor"),
        )

    async def put(self, path: str, body: Any) -> Any:
        return _decode((await self._send("PUT", path, json=body)).content)

    async def post(self, path: str, body: Any = None) -> Any:
        response = await self._send("POST", path, json=body)
        return _decode(response.content) if response.content else None

    async def patch(self, path: str, body: Any) -> Any:
        return _decode((await self._send("PATCH", path, json=body)).content)

    async def delete(self, path: str) -> None:
        await self._send("DELETE", path)
