"""What every console page shares: the navigation, rendering, error pages, security headers.

Pages are server-rendered Jinja templates. Links and forms are real (they work without script);
htmx (``hx-boost`` on ``<body>``) only turns them into in-place swaps. The layout puts the CSRF
token in ``hx-headers`` and each form repeats it as a hidden field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template import TemplateConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.console.auth import ConsoleConfig, ConsoleSession, CsrfRejected, LoginRequired, login_url
from api.console.client import ApiCallError

log = logging.getLogger("govrix.console")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass(frozen=True, slots=True)
class NavItem:
    """One section of the console. Paths must not collide with the routes mounted at ``/``
    beside the console (the scoring routes ``POST /events``, ``/scores/...``; ``/health``,
    ``/ready``, ``/metrics``, ``/schema``): hence ``/explorer`` for the events."""

    key: str
    href: str
    label: str
    #: The public route the page reads (shown on pages not built yet).
    api: str


NAV: tuple[NavItem, ...] = (
    NavItem("overview", "/", "Overview", "GET /api/v1/stats/overview"),
    NavItem("agents", "/agents", "Agents", "GET /api/v1/agents"),
    NavItem("sessions", "/sessions", "Sessions", "GET /api/v1/sessions"),
    NavItem("events", "/explorer", "Events", "GET /api/v1/events"),
    NavItem("live", "/live", "Live", "GET /api/v1/events/stream"),
    NavItem("risk", "/risk", "Risk", "GET /scores/{customer_id}"),
    NavItem("policies", "/policies", "Policies", "GET /api/v1/policies"),
    NavItem("budgets", "/budgets", "Budgets", "GET /api/v1/budgets"),
    NavItem("keys", "/keys", "Keys", "GET /api/v1/keys"),
    NavItem("audit", "/audit", "Audit", "GET /api/v1/audit"),
)
NAV_BY_KEY = {n.key: n for n in NAV}

# -- security headers ----------------------------------------------------------------------------

#: No inline script or style, no foreign origin, no framing. Charts are inline SVG (allowed: they
#: are markup, not script) coloured by classes.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none';"
    " object-src 'none'"
)
_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
)


def security_headers(*, no_store: bool) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware adding the console's headers to every response start (error pages and
    redirects too); ``no_store`` for pages (they show operational data), not static files."""
    extra = (*_HEADERS, (b"cache-control", b"no-store")) if no_store else _HEADERS

    def middleware(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    names = {extra_name for extra_name, _ in extra}
                    headers = [h for h in message.get("headers", []) if h[0].lower() not in names]
                    message["headers"] = [*headers, *extra]
                await send(message)

            await app(scope, receive, send_with_headers)

        return wrapped

    return middleware


# -- templates -----------------------------------------------------------------------------------


DASH = "\N{EN DASH}"  # an absent value in a table


def _size(value: Any) -> str:
    """Bytes as ``0 B``, ``12.3 KB``, ``4.0 MB`` (powers of 1024)."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return DASH
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _num(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _usd(value: Any) -> str:
    if value is None:
        return DASH
    v = float(value)
    return f"${v:,.4f}" if 0 < abs(v) < 1 else f"${v:,.2f}"


def parse_ts(value: Any) -> datetime | None:
    """An API timestamp (ISO 8601 with ``Z``) as an aware datetime, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _ts(value: Any) -> str:
    ts = parse_ts(value)
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z" if ts else DASH


def _ago(value: Any) -> str:
    ts = parse_ts(value)
    if ts is None:
        return "never"
    seconds = int((datetime.now(UTC) - ts).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _pct(value: Any) -> str:
    return DASH if value is None else f"{float(value) * 100:.0f}%"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja with autoescaping everywhere and strict undefined names (a typo fails a test, not
    silently renders nothing)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, usd=_usd, ts=_ts, ago=_ago, pct=_pct, size=_size)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def render(
    request: Request[Any, Any, Any],
    template: str,
    *,
    nav: str,
    title: str,
    status_code: int = 200,
    **context: Any,
) -> Template:
    """A full page: the layout's context (navigation, CSRF token, open-console banner) plus
    the page's own."""
    session: ConsoleSession | None = getattr(request.state, "console", None)
    config = request.route_handler.opt.get("console_config")
    return Template(
        template_name=template,
        status_code=status_code,
        context={
            "nav": NAV,
            "active": nav,
            "title": title,
            "csrf": session.csrf if session else "",
            "logged_in": session is not None and session.token_hash is not None,
            "insecure": isinstance(config, ConsoleConfig) and config.insecure_no_auth,
            **context,
        },
    )


def error_page(
    request: Request[Any, Any, Any], status: int, message: str, *, title: str = "Error"
) -> Template:
    return render(
        request, "error.html", nav="", title=title, status_code=status, status=status,
        message=message,
    )  # fmt: skip


def handle_console_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every failure of a console route as a page (or a redirect to the login), never JSON."""
    if isinstance(exc, LoginRequired):
        return Redirect(login_url(exc.next_url), status_code=303)
    if isinstance(exc, CsrfRejected):
        return error_page(
            request,
            403,
            "This form was missing its security token or the token is out of date."
            " Reload the page and try again; nothing was changed.",
            title="Forbidden",
        )
    if isinstance(exc, ApiCallError):
        return error_page(request, exc.status, exc.message)
    if isinstance(exc, ValidationException):
        return error_page(request, 400, "A parameter in the address is not valid.")
    if isinstance(exc, HTTPException):
        return error_page(request, exc.status_code, exc.detail or "Error")
    log.exception("console error on %s %s", request.method, request.url.path)
    return error_page(request, 500, "Something went wrong inside the console; see the API log.")
