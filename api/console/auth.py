"""Console login: the API key once, then a session cookie; CSRF tokens on every change.

- ``POST /login`` compares the key with ``GOVRIX_API_KEY`` in constant time. On success it inserts
  a ``console_sessions`` row (sql/008: the sha256 of a random token, never the token or the key;
  a random CSRF token; an expiry) and sets cookie ``govrix_session`` = the token: httpOnly,
  SameSite=Strict, Path=/, Secure when the request came over https.
- Every console route is guarded by :func:`session_guard`: no valid session -> 303 to
  ``/login?next=<this page>`` (only a same-site relative ``next`` is ever followed back).
- Every state-changing request (any method but GET/HEAD) must carry the session's CSRF token, as
  form field ``_csrf`` or header ``X-CSRF-Token`` (the layout sets it on every htmx request with
  ``hx-headers``); otherwise 403 and nothing runs.
- ``POST /logout`` deletes the row and the cookie.
- ``insecure_no_auth=True``: no login; pages say so in a banner. A per-process CSRF token is still
  required on changes, so another site cannot post a form into an open console.

The JSON API never accepts this cookie: it keeps its bearer guard (api/app.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

COOKIE = "govrix_session"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ConsoleConfig:
    """How the console authenticates; built once per app by ``api.console.build_console``."""

    api_key: str | None
    insecure_no_auth: bool = False
    session_ttl: timedelta = timedelta(hours=12)
    #: The CSRF token of an open (``insecure_no_auth``) console: random per process.
    open_csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """What a request knows about its login: the CSRF token forms must echo."""

    csrf: str
    token_hash: bytes | None  # None for an open console


class LoginRequired(Exception):
    """No valid session: the console's error handler redirects to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__("login required")
        self.next_url = next_url


class CsrfRejected(Exception):
    """A change without the session's CSRF token: 403, nothing done."""


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def key_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison of the typed key with the API key (False when there is none)."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this site (``/agents?x=1``), else ``/``.

    Refuses absolute and scheme-relative URLs (``//evil``, ``/\\evil``: browsers read a backslash
    as a slash), control characters, and the login pages themselves.
    """
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(c in value for c in "\\\r\n\t\x00") or any(ord(c) < 32 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path in ("/login", "/logout"):
        return "/"
    return value


def login_url(next_url: str) -> str:
    return "/login" if next_url == "/" else f"/login?next={quote(next_url, safe='/')}"


def is_https(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """The scheme the client used (uvicorn rewrites it from trusted ``X-Forwarded-Proto``)."""
    return connection.scope.get("scheme") == "https"


def _pool(connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
    return connection.app.state.pool


async def create_session(
    connection: ASGIConnection[Any, Any, Any, Any], ttl: timedelta
) -> tuple[str, ConsoleSession]:
    """Insert a session row; return the cookie's token and the session. Expired rows are
    deleted on the way (by ``console_sessions_expires_idx``), so the table stays small."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    digest = token_hash(token)
    async with _pool(connection).connection() as conn, conn.transaction():
        await conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
        await conn.execute(
            "INSERT INTO console_sessions (token_hash, csrf, expires_at)"
            " VALUES (%s, %s, now() + %s)",
            (digest, csrf, ttl),
        )
    return token, ConsoleSession(csrf=csrf, token_hash=digest)


async def find_session(
    connection: ASGIConnection[Any, Any, Any, Any],
) -> ConsoleSession | None:
    """The live session named by the request's cookie, or None."""
    token = connection.cookies.get(COOKIE)
    if not token or len(token) > 200:
        return None
    digest = token_hash(token)
    async with _pool(connection).connection() as conn:
        cur = await conn.execute(
            "SELECT csrf FROM console_sessions WHERE token_hash = %s AND expires_at > now()",
            (digest,),
        )
        row = await cur.fetchone()
    return ConsoleSession(csrf=row[0], token_hash=digest) if row else None


async def delete_session(connection: ASGIConnection[Any, Any, Any, Any], digest: bytes) -> None:
    async with _pool(connection).connection() as conn:
        await conn.execute("DELETE FROM console_sessions WHERE token_hash = %s", (digest,))


async def submitted_csrf(request: Request[Any, Any, Any]) -> str:
    """The CSRF token a request carries: header first (htmx), else the form field.

    Reading the form here is free for the handler: Litestar keeps the parsed form in the scope.
    """
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def session_guard(config: ConsoleConfig) -> Any:
    """The guard of every console route (module docstring); puts the session in
    ``connection.state.console``."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if config.insecure_no_auth:
            session: ConsoleSession | None = ConsoleSession(csrf=config.open_csrf, token_hash=None)
        else:
            session = await find_session(connection)
        if session is None:
            target = connection.scope.get("path", "/")
            query = connection.scope.get("query_string", b"").decode("latin-1")
            method = connection.scope.get("method", "GET")
            # After a login, a changing request cannot be replayed: go back to its page instead.
            raise LoginRequired(
                safe_next(target + (f"?{query}" if query and method in SAFE_METHODS else ""))
            )
        method = connection.scope.get("method", "GET")
        if method not in SAFE_METHODS:
            request: Request[Any, Any, Any] = Request(connection.scope, connection.receive)
            given = await submitted_csrf(request)
            if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                raise CsrfRejected("missing or wrong CSRF token")
        connection.state.console = session

    return guard
