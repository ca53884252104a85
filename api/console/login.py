"""``/login`` and ``/logout`` (the rules are in api/console/auth.py)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from api.console.auth import (
    COOKIE,
    ConsoleConfig,
    ConsoleSession,
    create_session,
    delete_session,
    find_session,
    is_https,
    key_matches,
    safe_next,
)
from api.console.web import render

ConfigDep = NamedDependency[ConsoleConfig]
KEY_MAX = 1000


def _login_page(
    request: Request[Any, Any, Any], next_url: str, error: str | None, status: int = 200
) -> Template:
    return render(
        request, "login.html", nav="", title="Log in", status_code=status, next_url=next_url,
        error=error,
    )  # fmt: skip


@get("/login", name="console:login")
async def login_form(
    request: Request[Any, Any, Any],
    console_config: ConfigDep,
    next_: Annotated[str | None, QueryParameter(name="next", max_length=2000)] = None,
) -> Template | Redirect:
    """The login form; an open console or a live session goes straight to ``next``."""
    target = safe_next(next_)
    if console_config.insecure_no_auth or await find_session(request) is not None:
        return Redirect(target, status_code=303)
    return _login_page(request, target, None)


@post("/login", name="console:login-submit", status_code=303)
async def login_submit(
    request: Request[Any, Any, Any], console_config: ConfigDep
) -> Template | Redirect:
    """Check the key (constant time); on success start a session and go to ``next``."""
    form = await request.form()
    key = form.get("key")
    target = safe_next(form.get("next") if isinstance(form.get("next"), str) else None)
    if console_config.insecure_no_auth:
        return Redirect(target, status_code=303)
    if not isinstance(key, str) or not key or len(key) > KEY_MAX:
        return _login_page(request, target, "Enter the API key (GOVRIX_API_KEY).", 400)
    if not key_matches(key.strip(), console_config.api_key):
        return _login_page(request, target, "That is not the API key.", 401)
    token, _session = await create_session(request, console_config.session_ttl)
    return Redirect(
        target,
        status_code=303,
        cookies=[
            Cookie(
                key=COOKIE,
                value=token,
                path="/",
                httponly=True,
                samesite="strict",
                secure=is_https(request),
                max_age=int(console_config.session_ttl.total_seconds()),
            )
        ],
    )


@post("/logout", name="console:logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    """End the session (guarded: a cross-site form cannot log an operator out)."""
    session: ConsoleSession = request.state.console
    if session.token_hash is not None:
        await delete_session(request, session.token_hash)
    response = Redirect("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
