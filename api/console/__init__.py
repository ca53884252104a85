"""The operator console: server-rendered pages at ``/`` beside the JSON API at ``/api/v1``.

Layout of the package (docs/console.md says what each page shows):

- ``auth.py``: login sessions (``console_sessions``), the session guard, CSRF; ``login.py`` its
  two pages.
- ``client.py``: the in-process client of the public routes, the console's only data source.
- ``pages.py``: Overview, Agents, one agent; ``live.py``: the Live page and its stream.
- ``web.py``: navigation, rendering, error pages, security headers; ``svg.py``: charts.
- ``templates/`` (Jinja), ``static/`` (our CSS and JS, htmx vendored under ``static/vendor/``).

Adding a page: write a handler that calls :class:`~api.console.client.ApiClient` and returns
:func:`~api.console.web.render`, add it to ``_PAGES`` below, its template under ``templates/``
(extending ``base.html``) and, for a new section, a ``NavItem`` in ``web.NAV``. Forms that change
something are ``method="post"`` and include ``{% include "_csrf.html" %}`` (the hidden
``_csrf`` field); the guard checks the token before the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Router
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from api.console import explore, live, login, manage, pages, risk, sessions
from api.console.auth import ConsoleConfig, session_guard
from api.console.web import STATIC, handle_console_exception, security_headers, template_config

_PAGES: list[Any] = [
    pages.overview,
    pages.agents,
    pages.agent_page,
    pages.block_agent,
    pages.unblock_agent,
    pages.retire_agent,
    live.live_page,
    live.live_stream,
    login.logout,
    *manage.PAGES,
    sessions.sessions,
    sessions.session_page,
    explore.events,
    explore.event_page,
    risk.risk,
    risk.action_page,
    *pages.NOT_BUILT,
]


@dataclass(frozen=True)
class Console:
    """What ``create_app`` mounts: the console's routers and the app's template config."""

    route_handlers: list[Router]
    template_config: TemplateConfig[JinjaTemplateEngine]
    config: ConsoleConfig


def build_console(api_key: str | None, *, insecure_no_auth: bool = False) -> Console:
    """The console for an app with this API key (or open, with ``insecure_no_auth``)."""
    config = ConsoleConfig(api_key=api_key, insecure_no_auth=insecure_no_auth)
    common: dict[str, Any] = {
        "dependencies": {
            "console_config": Provide(lambda: config, sync_to_thread=False),
            "api": Provide(pages.provide_api),
        },
        "exception_handlers": {Exception: handle_console_exception},
        "middleware": [security_headers(no_store=True)],
        "include_in_schema": False,
        "opt": {"console_config": config},
    }
    guarded = Router(path="/", route_handlers=_PAGES, guards=[session_guard(config)], **common)
    open_ = Router(path="/", route_handlers=[login.login_form, login.login_submit], **common)
    static = create_static_files_router(
        path="/static",
        directories=[STATIC],
        name="console-static",
        middleware=[security_headers(no_store=False)],
        include_in_schema=False,
    )
    return Console(
        route_handlers=[guarded, open_, static], template_config=template_config(), config=config
    )


__all__ = ["Console", "ConsoleConfig", "build_console"]
