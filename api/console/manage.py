"""The console's management pages: Policies, Budgets, Keys, Audit.

Like every page, each reads and changes data only through :class:`ApiClient` (the public
``/api/v1`` routes, so every change is validated and audited by the API itself). Forms that
change something are ``method="post"`` with the CSRF field; after a change the handler redirects
with a fixed ``?done=`` word (:data:`DONE`, nothing echoed from the URL). An API error is shown
on the page with what was typed, and the page answers the route's status.

One exception to the redirect: creating a scoring key answers the page itself, with the new key
in it, so the key never travels in a URL (a redirect's ``Location``, the history, a log line).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast
from urllib.parse import quote, urlencode

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from api.console.client import ApiCallError, ApiClient
from api.console.pages import WINDOWS, ApiDep, Window, budget_use
from api.console.svg import meter
from api.console.web import error_page, render

#: What a change's redirect may announce (``?done=``): fixed texts, nothing echoed from the URL.
DONE = {
    "activated": "The policy is active: every proxy applies it within a second.",
    "unchanged": "This text is the active policy already: nothing was stored.",
    "created": "Budget created: every proxy applies it within a second.",
    "updated": "Budget saved: every proxy applies it within a second.",
    "deleted": "Budget deleted.",
    "revoked": "Key revoked: the scoring routes refuse it from now on.",
}
Done = Annotated[str | None, QueryParameter(max_length=20)]
Offset = Annotated[int, QueryParameter(ge=0, le=1_000_000)]
Cursor = Annotated[str | None, QueryParameter(max_length=200)]

HISTORY_PAGE = 20
BUDGETS_PAGE = 100
KEYS_PAGE = 100
AUDIT_PAGE = 50
#: The editor's limit (the API's ``MAX_BODY`` is 1 MiB of UTF-8).
POLICY_MAX_CHARS = 1024 * 1024
TIERS = ("starter", "pro", "enterprise")
#: Audit actions (api/audit.py), offered as suggestions of the action filter (a prefix).
AUDIT_ACTIONS = (
    "agent.",
    "agent.update",
    "agent.retire",
    "budget.",
    "budget.create",
    "budget.update",
    "budget.delete",
    "key.",
    "key.create",
    "key.revoke",
    "policy.put",
)


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _status(e: ApiCallError) -> int:
    """The page's status for an API error: the route's 4xx, or 502 for anything else."""
    return e.status if 400 <= e.status < 500 else 502


async def _agent_names(api: ApiClient) -> dict[str, str]:
    page = await api.page("/agents", limit=1000)
    return {a["id"]: a["name"] for a in page.items}


def _url(path: str, **query: Any) -> str:
    params = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(params) if params else "")


# -- Policies ------------------------------------------------------------------------------------

#: ``PolicyError`` reads ``path:line: message``; the API prefixes ``invalid policy:``.
_PROBLEM = re.compile(r"^invalid policy: policy(?::(\d+))?: (.*)$", re.IGNORECASE | re.DOTALL)


def policy_problem(message: str) -> dict[str, Any]:
    """The line and message of a 422 from validate or put (its ``errors[0]``, as the API's
    ``error`` text carries it); the whole text when it has no line."""
    m = _PROBLEM.match(message)
    if m is None:
        return {"line": None, "message": message}
    return {"line": int(m.group(1)) if m.group(1) else None, "message": m.group(2)}


def excerpt(text: str, line: int | None, around: int = 2) -> list[tuple[int, str, bool]]:
    """Numbered lines of ``text`` around ``line`` (1-based): (number, text, is the line)."""
    if line is None:
        return []
    lines = text.splitlines() or [""]
    lo, hi = max(line - around, 1), min(line + around, len(lines))
    return [(n, lines[n - 1], n == line) for n in range(lo, hi + 1)]


def _hit_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    top = max((r["hits"] for r in stats["rules"]), default=0)
    return [
        {
            **r,
            "svg": meter(r["hits"], top, label=f"{r['rule']}: {r['hits']} matches") if top else "",
        }
        for r in stats["rules"]
    ]


async def _policies_context(
    api: ApiClient, window: str, cursor: str | None, edit: int | None
) -> dict[str, Any]:
    page, stats = await asyncio.gather(
        api.page("/policies", limit=HISTORY_PAGE, cursor=cursor),
        api.get("/stats/policies", window=window),
    )
    # GET /api/v1/policies answers an object (active, history); its headers page the history.
    doc = cast(dict[str, Any], page.items)
    active = doc["active"]
    source = active
    if edit is not None and (active is None or edit != active["id"]):
        source = await api.get(f"/policies/{edit}")
    return {
        "active": active,
        "history": doc["history"],
        "total": page.total or 0,
        "older_url": _url("/policies", window=window, cursor=page.next_cursor)
        if page.next_cursor
        else None,
        "cursor": cursor,
        "stats": stats,
        "hits": _hit_rows(stats),
        "window": window,
        "windows": WINDOWS,
        "editing": source["id"] if source is not None and source is not active else None,
        "text": source["yaml"] if source is not None else "",
    }


def _policies_page(
    request: Request[Any, Any, Any],
    context: dict[str, Any],
    *,
    status_code: int = 200,
    done: str | None = None,
    error: str | None = None,
    check: dict[str, Any] | None = None,
) -> Template:
    return render(
        request,
        "policies.html",
        nav="policies",
        title="Policies",
        status_code=status_code,
        done=done,
        error=error,
        check=check,
        **context,
    )


@get("/policies", name="console:policies")
async def policies(
    request: Request[Any, Any, Any],
    api: ApiDep,
    window: FromQuery[Window] = "24h",
    cursor: Cursor = None,
    edit: Annotated[int | None, QueryParameter(ge=1)] = None,
    done: Done = None,
) -> Template:
    """The active version and its text, the history, hits per rule in a window, the editor."""
    context = await _policies_context(api, window, cursor, edit)
    return _policies_page(request, context, done=DONE.get(done or ""))


@post("/policies", name="console:policies-submit", status_code=200)
async def submit_policy(request: Request[Any, Any, Any], api: ApiDep) -> Template | Redirect:
    """The editor: ``op=validate`` (``POST /api/v1/policies/validate``, the result on the page)
    or ``op=activate`` (``PUT /api/v1/policies``, then a redirect). The text stays as typed."""
    form = await _form(request)
    text = form.get("yaml", "")
    op = form.get("op", "validate")
    window = form.get("window") if form.get("window") in dict(WINDOWS) else "24h"
    context = await _policies_context(api, cast(str, window), None, None)
    before = context["active"]["id"] if context["active"] is not None else None
    context["text"] = text
    context["editing"] = None
    check: dict[str, Any] | None = None
    try:
        if len(text) > POLICY_MAX_CHARS:
            raise ApiCallError(413, f"The text is longer than {POLICY_MAX_CHARS} characters.")
        if op == "activate":
            version = await api.put("/policies", {"yaml": text})
            done = "unchanged" if version["id"] == before else "activated"
            return Redirect(f"/policies?done={done}", status_code=303)
        result = await api.post("/policies/validate", {"yaml": text})
        check = {"valid": True, "rule_count": result["rule_count"], "rules": result["rules"]}
    except ApiCallError as e:
        if e.status != 422:
            return _policies_page(request, context, status_code=_status(e), error=e.message)
        problem = policy_problem(e.message)
        check = {"valid": False, **problem, "excerpt": excerpt(text, problem["line"])}
        return _policies_page(request, context, status_code=422, check=check)
    return _policies_page(request, context, check=check)


@get("/policies/{version_id:int}", name="console:policy-version")
async def policy_version(
    request: Request[Any, Any, Any], api: ApiDep, version_id: FromPath[int]
) -> Template:
    """One stored version: who, when, source, checksum, rule count and its YAML text."""
    version, page = await asyncio.gather(
        api.get(f"/policies/{version_id}"), api.page("/policies", limit=1)
    )
    active = cast(dict[str, Any], page.items)["active"]
    return render(
        request,
        "policy_version.html",
        nav="policies",
        title=f"Policy version {version['id']}",
        version=version,
        is_active=active is not None and active["id"] == version["id"],
    )


# -- Budgets -------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^\d+(\.\d+)?$")
BUDGET_FIELDS = ("scope", "agent_id", "period", "metric", "limit", "enabled")


def budget_body(form: dict[str, str]) -> dict[str, Any]:
    """The JSON body for ``POST``/``PATCH /api/v1/budgets`` from the form; the API checks the
    values (and answers the errors shown), only the limit's number is read here."""
    limit_text = form.get("limit", "").strip().replace(",", "")
    if not _NUMBER.match(limit_text):
        raise ApiCallError(400, "The limit must be a number like 1000 or 5.50.", "limit")
    return {
        "scope": form.get("scope", ""),
        "agent_id": form.get("agent_id", "").strip() or None,
        "period": form.get("period", ""),
        "metric": form.get("metric", ""),
        "limit": float(limit_text) if "." in limit_text else int(limit_text),
        "enabled": form.get("enabled") == "true",
    }


def _budget_values(b: dict[str, Any]) -> dict[str, Any]:
    """A budget as the edit form shows it."""
    limit = b["limit"]
    text = f"{limit:.6f}".rstrip("0").rstrip(".") if isinstance(limit, float) else str(limit)
    return {
        "scope": b["scope"],
        "agent_id": b["agent_id"] or "",
        "period": b["period"],
        "metric": b["metric"],
        "limit": text,
        "enabled": "true" if b["enabled"] else "",
    }


def _use(budget: dict[str, Any]) -> dict[str, Any]:
    """One budget's use this period: ratio, label and gauge (as the Agents page shows them)."""
    return budget_use([{**budget, "agent_id": "this", "enabled": True}])["this"]


_NEW_BUDGET = {
    "scope": "agent",
    "agent_id": "",
    "period": "daily",
    "metric": "usd",
    "limit": "",
    "enabled": "true",
}


async def _budgets_page(
    request: Request[Any, Any, Any],
    api: ApiClient,
    offset: int,
    *,
    status_code: int = 200,
    done: str | None = None,
    error: str | None = None,
    error_field: str | None = None,
    values: dict[str, Any] | None = None,
) -> Template:
    page, names = await asyncio.gather(
        api.page("/budgets", limit=BUDGETS_PAGE, offset=offset), _agent_names(api)
    )
    total = page.total or 0
    rows = [{**b, "use": _use(b)} for b in page.items]
    return render(
        request,
        "budgets.html",
        nav="budgets",
        title="Budgets",
        status_code=status_code,
        budgets=rows,
        names=names,
        total=total,
        offset=offset,
        prev_url=_url("/budgets", offset=max(offset - BUDGETS_PAGE, 0)) if offset else None,
        next_url=_url("/budgets", offset=offset + BUDGETS_PAGE)
        if offset + BUDGETS_PAGE < total
        else None,
        done=done,
        error=error,
        error_field=error_field,
        values=values or _NEW_BUDGET,
    )


@get("/budgets", name="console:budgets")
async def budgets(
    request: Request[Any, Any, Any], api: ApiDep, offset: Offset = 0, done: Done = None
) -> Template:
    """Every budget with its use against its limit this period, and the create form."""
    return await _budgets_page(request, api, offset, done=DONE.get(done or ""))


@post("/budgets", name="console:budget-create", status_code=200)
async def create_budget(request: Request[Any, Any, Any], api: ApiDep) -> Template | Redirect:
    """``POST /api/v1/budgets``; on an error the form comes back as typed with the message."""
    form = await _form(request)
    try:
        await api.post("/budgets", budget_body(form))
    except ApiCallError as e:
        values = {f: form.get(f, "") for f in BUDGET_FIELDS}
        return await _budgets_page(
            request, api, 0, status_code=_status(e), error=e.message, error_field=e.field,
            values=values,
        )  # fmt: skip
    return Redirect("/budgets?done=created", status_code=303)


def _budget_page(
    request: Request[Any, Any, Any],
    budget: dict[str, Any],
    names: dict[str, str],
    values: dict[str, Any],
    *,
    status_code: int = 200,
    error: str | None = None,
    error_field: str | None = None,
) -> Template:
    return render(
        request,
        "budget.html",
        nav="budgets",
        title=f"Budget {budget['id']}",
        status_code=status_code,
        budget=budget,
        use=_use(budget),
        names=names,
        values=values,
        error=error,
        error_field=error_field,
    )


@get("/budgets/{budget_id:int}", name="console:budget")
async def budget_page(
    request: Request[Any, Any, Any], api: ApiDep, budget_id: FromPath[int]
) -> Template:
    """One budget: its use this period, the edit form and the delete button."""
    budget, names = await asyncio.gather(api.get(f"/budgets/{budget_id}"), _agent_names(api))
    return _budget_page(request, budget, names, _budget_values(budget))


@post("/budgets/{budget_id:int}", name="console:budget-update", status_code=200)
async def update_budget(
    request: Request[Any, Any, Any], api: ApiDep, budget_id: FromPath[int]
) -> Template | Redirect:
    """``PATCH /api/v1/budgets/{id}`` with every field of the form."""
    form = await _form(request)
    try:
        await api.patch(f"/budgets/{budget_id}", budget_body(form))
    except ApiCallError as e:
        if e.status == 404:
            return error_page(request, 404, e.message)
        budget, names = await asyncio.gather(api.get(f"/budgets/{budget_id}"), _agent_names(api))
        values = {f: form.get(f, "") for f in BUDGET_FIELDS}
        return _budget_page(
            request, budget, names, values, status_code=_status(e), error=e.message,
            error_field=e.field,
        )  # fmt: skip
    return Redirect("/budgets?done=updated", status_code=303)


@post("/budgets/{budget_id:int}/delete", name="console:budget-delete", status_code=200)
async def delete_budget(
    request: Request[Any, Any, Any], api: ApiDep, budget_id: FromPath[int]
) -> Template | Redirect:
    """``DELETE /api/v1/budgets/{id}``."""
    try:
        await api.delete(f"/budgets/{budget_id}")
    except ApiCallError as e:
        return error_page(request, _status(e), e.message)
    return Redirect("/budgets?done=deleted", status_code=303)


# -- Keys ----------------------------------------------------------------------------------------

KeyState = Literal["live", "revoked"]


async def _keys_page(
    request: Request[Any, Any, Any],
    api: ApiClient,
    state: str | None,
    offset: int,
    *,
    status_code: int = 200,
    done: str | None = None,
    error: str | None = None,
    error_field: str | None = None,
    values: dict[str, str] | None = None,
    new_key: dict[str, Any] | None = None,
) -> Template:
    revoked = {"live": False, "revoked": True}.get(state or "")
    page = await api.page("/keys", revoked=revoked, limit=KEYS_PAGE, offset=offset)
    total = page.total or 0
    return render(
        request,
        "keys.html",
        nav="keys",
        title="Keys",
        status_code=status_code,
        keys=page.items,
        state=state,
        total=total,
        offset=offset,
        prev_url=_url("/keys", status=state, offset=max(offset - KEYS_PAGE, 0)) if offset else None,
        next_url=_url("/keys", status=state, offset=offset + KEYS_PAGE)
        if offset + KEYS_PAGE < total
        else None,
        done=done,
        error=error,
        error_field=error_field,
        values=values or {"customer_id": "", "tier": "starter"},
        tiers=TIERS,
        new_key=new_key,
    )


@get("/keys", name="console:keys")
async def keys(
    request: Request[Any, Any, Any],
    api: ApiDep,
    status: FromQuery[KeyState | None] = None,
    offset: Offset = 0,
    done: Done = None,
) -> Template:
    """Scoring keys by prefix (never the key), the create form, a revoke button per live key."""
    return await _keys_page(request, api, status, offset, done=DONE.get(done or ""))


@post("/keys", name="console:key-create", status_code=201)
async def create_key(request: Request[Any, Any, Any], api: ApiDep) -> Template:
    """``POST /api/v1/keys``; answers the page itself with the new key shown this once (no
    redirect: the key must not be in a URL)."""
    form = await _form(request)
    values = {"customer_id": form.get("customer_id", "").strip(), "tier": form.get("tier", "")}
    try:
        created = await api.post("/keys", values)
    except ApiCallError as e:
        return await _keys_page(
            request, api, None, 0, status_code=_status(e), error=e.message, error_field=e.field,
            values=values,
        )  # fmt: skip
    return await _keys_page(request, api, None, 0, status_code=201, new_key=created)


@post("/keys/{key_id:str}/revoke", name="console:key-revoke", status_code=200)
async def revoke_key(
    request: Request[Any, Any, Any], api: ApiDep, key_id: FromPath[str]
) -> Template | Redirect:
    """``DELETE /api/v1/keys/{id}``."""
    try:
        await api.delete(f"/keys/{quote(key_id, safe='')}")
    except ApiCallError as e:
        return error_page(request, _status(e), e.message)
    return Redirect("/keys?done=revoked", status_code=303)


# -- Audit ---------------------------------------------------------------------------------------

_LOCAL_MINUTE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def utc_param(name: str, value: str | None) -> str | None:
    """A ``datetime-local`` value (``2026-12-02T14:05``), read as UTC, as the API takes it."""
    if not value:
        return None
    if not _LOCAL_MINUTE.match(value):
        raise ApiCallError(400, f"The {name} time must look like 2026-12-02T14:05 (UTC).", name)
    try:
        ts = datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise ApiCallError(400, f"The {name} time is not a real date.", name) from None
    return ts.isoformat().replace("+00:00", "Z")


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[dict[str, str]]:
    """What one audit row changed, key by key (values as compact JSON; absent is empty)."""
    b, a = before or {}, after or {}
    out = []
    for k in [*b, *(k for k in a if k not in b)]:
        if b.get(k) != a.get(k) or k not in b or k not in a:
            out.append(
                {
                    "key": k,
                    "before": _json(b[k]) if k in b else "",
                    "after": _json(a[k]) if k in a else "",
                }
            )
    return out


def target_url(target: str) -> str | None:
    """The console page of an audit row's target, when it has one."""
    kind, _, ident = target.partition(":")
    if kind == "agent" and ident:
        return "/agents/" + quote(ident, safe="")
    if kind == "budget" and ident.isdigit():
        return f"/budgets/{ident}"
    if kind == "policy":
        return "/policies"
    return None


@get("/audit", name="console:audit")
async def audit(
    request: Request[Any, Any, Any],
    api: ApiDep,
    action: Annotated[str | None, QueryParameter(max_length=100)] = None,
    target: Annotated[str | None, QueryParameter(max_length=300)] = None,
    since: Annotated[str | None, QueryParameter(max_length=30)] = None,
    until: Annotated[str | None, QueryParameter(max_length=30)] = None,
    cursor: Cursor = None,
) -> Template:
    """The audit log, newest first, filtered by action (a prefix), target and time; 50 a page."""
    filters = {
        "action": (action or "").strip(),
        "target": (target or "").strip(),
        "since": since or "",
        "until": until or "",
    }
    error: str | None = None
    status_code = 200
    rows: list[dict[str, Any]] = []
    total = 0
    older_url = None
    try:
        page = await api.page(
            "/audit",
            action=filters["action"],
            target=filters["target"],
            since=utc_param("since", since),
            until=utc_param("until", until),
            limit=AUDIT_PAGE,
            cursor=cursor,
        )
        rows = [
            {**r, "changes": changes(r["before"], r["after"]), "url": target_url(r["target"])}
            for r in page.items
        ]
        total = page.total or 0
        if page.next_cursor:
            older_url = _url("/audit", **filters, cursor=page.next_cursor)
    except ApiCallError as e:
        error, status_code = e.message, _status(e)
    return render(
        request,
        "audit.html",
        nav="audit",
        title="Audit",
        status_code=status_code,
        rows=rows,
        total=total,
        filters=filters,
        filtered=any(filters.values()),
        newest_url=_url("/audit", **filters) if cursor else None,
        older_url=older_url,
        error=error,
        actions=AUDIT_ACTIONS,
    )


PAGES: list[Any] = [
    policies,
    submit_policy,
    policy_version,
    budgets,
    create_budget,
    budget_page,
    update_budget,
    delete_budget,
    keys,
    create_key,
    revoke_key,
    audit,
]
