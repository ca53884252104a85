"""``/api/v1/policies``: the policy as versions in PostgreSQL (``policy_versions``, sql/008).

The newest version (highest id) is the active one. ``PUT`` compiles the text with the proxy's own
parser (``addon.policy.parse.load_policy_text``), so a text the API stores is one every proxy can
load; its insert fires ``NOTIFY govrix_policies`` and every proxy applies it within a second
(addon/policy/sync.py). A text that does not compile is a 422 and stores nothing. Putting the
active text again (same sha256 of its UTF-8 bytes) changes nothing; putting an older text is how
to roll back: history is never rewritten.

Bodies (``validate`` and ``PUT``): the YAML itself as ``text/plain`` or ``application/yaml``
(``application/x-yaml``, ``text/yaml``), or JSON ``{"yaml": "..."}`` as ``application/json``;
UTF-8, at most :data:`MAX_BODY` bytes (413 above).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath
from psycopg import AsyncConnection

from addon.policy.model import PolicyError
from addon.policy.parse import load_policy_text
from api import audit
from api.errors import ApiError, bad_request, error_responses, not_found
from api.events import CursorParam, Limit, PoolDep
from api.pagination import LIMIT_DEFAULT, PAGE_HEADERS, decode_cursor, encode_cursor, page_headers
from api.schemas import ErrorBody

#: Largest policy body accepted (a large real policy is a few hundred rules, ~100 KiB).
MAX_BODY = 1024 * 1024
#: ``source`` of a version put through this API (a proxy's file is ``file:<path>``).
SOURCE = "api"
_TEXT_TYPES = frozenset({"text/plain", "application/yaml", "application/x-yaml", "text/yaml"})


class PolicyVersionSummary(msgspec.Struct, kw_only=True):
    """One stored version without its text: who made it, when, from where, what it holds."""

    id: int
    created_at: datetime
    who: str
    source: str
    checksum: str
    rule_count: int


class PolicyVersionOut(PolicyVersionSummary, kw_only=True):
    """One stored version with its YAML text."""

    yaml: str


class PoliciesOut(msgspec.Struct, kw_only=True):
    """The active version (``null`` before the first one) and the history, newest first."""

    active: PolicyVersionOut | None
    history: list[PolicyVersionSummary]


class PolicyValid(msgspec.Struct, kw_only=True):
    """``POST /api/v1/policies/validate`` for a text that compiles: its rules, in file order."""

    valid: bool
    rule_count: int
    rules: list[str]


class PolicyProblem(msgspec.Struct, kw_only=True):
    """Where a text fails: the 1-based line (``null`` when the YAML library gives none)."""

    line: int | None
    message: str


class PolicyInvalid(ErrorBody, kw_only=True):
    """422 for a text that does not compile: the house error body plus ``valid`` and ``errors``.

    The parser stops at the first problem, so ``errors`` holds one entry today; a list keeps the
    shape when it reports more.
    """

    valid: bool
    errors: list[PolicyProblem]


class _JsonBody(msgspec.Struct, forbid_unknown_fields=True):
    yaml: str


_JSON_BODY = msgspec.json.Decoder(_JsonBody)
_STRING = Schema(type=OpenAPIType.STRING)


@dataclass
class _PolicyTextOperation(Operation):
    """Documents the raw body that the handlers read themselves (Litestar sees no ``data``)."""

    def __post_init__(self) -> None:
        text = OpenAPIMediaType(schema=_STRING)
        self.request_body = RequestBody(
            required=True,
            description=f"The policy YAML (docs/policy.md), UTF-8, at most {MAX_BODY} bytes.",
            content={
                "text/plain": text,
                "application/yaml": text,
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        properties={"yaml": _STRING},
                        required=["yaml"],
                        additional_properties=False,
                    )
                ),
            },
        )


_INVALID = {
    422: ResponseSpec(
        data_container=PolicyInvalid, description="The text does not compile; nothing stored"
    ),
    413: ResponseSpec(data_container=ErrorBody, description=f"Body over {MAX_BODY} bytes"),
    415: ResponseSpec(data_container=ErrorBody, description="Unsupported content type"),
}
_COLUMNS = "id, created_at, who, source, checksum, rule_count"


async def _policy_text(request: Request[Any, Any, Any]) -> str:
    """The YAML a client sent, by its content type; 400, 413 or 415 for a body we cannot read."""
    try:
        body = await request.body()
    except RequestEntityTooLarge:
        raise ApiError(413, f"invalid body: larger than {MAX_BODY} bytes", field="body") from None
    media_type = request.content_type[0].lower()
    if media_type == "application/json":
        try:
            return _JSON_BODY.decode(body).yaml
        except msgspec.ValidationError as e:
            raise bad_request("body", f'expected {{"yaml": "<policy text>"}}: {e}') from None
        except msgspec.DecodeError as e:
            raise bad_request("body", f"malformed JSON: {e}") from None
    if media_type not in _TEXT_TYPES:
        raise ApiError(
            415,
            "unsupported content type: send text/plain or application/yaml (the YAML itself)"
            ' or application/json ({"yaml": "..."})',
            field="body",
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request("body", f"not UTF-8 (byte {e.start})") from None


def _invalid(e: PolicyError) -> Response[Any]:  # Any: the handlers answer a union
    return Response(
        PolicyInvalid(
            error=f"invalid policy: {e}",
            field="yaml",
            valid=False,
            errors=[PolicyProblem(line=e.line, message=e.message)],
        ),
        status_code=422,
    )


def _summary(row: tuple[Any, ...]) -> PolicyVersionSummary:
    return PolicyVersionSummary(**dict(zip(_COLUMNS.split(", "), row, strict=True)))


def _version(row: tuple[Any, ...]) -> PolicyVersionOut:
    return PolicyVersionOut(**dict(zip([*_COLUMNS.split(", "), "yaml"], row, strict=True)))


async def _active(conn: AsyncConnection[Any]) -> PolicyVersionOut | None:
    cur = await conn.execute(
        "SELECT " + _COLUMNS + ", yaml FROM policy_versions ORDER BY id DESC LIMIT 1"
    )
    row = await cur.fetchone()
    return _version(row) if row is not None else None


class PolicyController(Controller):
    """Policy versions: the active one, the history, validation, and putting a new one."""

    path = "/policies"
    tags = ["policies"]

    @get(
        "/",
        operation_id="getPolicies",
        responses=error_responses(400, 401),
        response_headers=PAGE_HEADERS,
    )
    async def get_policies(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        limit: Limit = LIMIT_DEFAULT,
        cursor: CursorParam = None,
    ) -> Response[PoliciesOut]:
        """The active version with its text, and a page of the history (newest first, every
        version including the active one, without texts).

        ``limit`` and ``cursor`` page the history only; ``X-Total-Count`` counts versions.
        """
        before_id: int | None = None
        if cursor is not None:
            c = decode_cursor(cursor)
            if not c.id.isdigit() or len(c.id) > 19:
                raise bad_request("cursor", "not a cursor returned by this API")
            before_id = int(c.id)
        async with pool.connection() as conn, conn.pipeline():
            active_cur = await conn.execute(
                "SELECT " + _COLUMNS + ", yaml FROM policy_versions ORDER BY id DESC LIMIT 1"
            )
            page_cur = await conn.execute(
                "SELECT " + _COLUMNS + " FROM policy_versions"
                " WHERE %(before)s::bigint IS NULL OR id < %(before)s ORDER BY id DESC LIMIT %(n)s",
                {"before": before_id, "n": limit},
            )
            count_cur = await conn.execute("SELECT count(*) FROM policy_versions")
            active_row = await active_cur.fetchone()
            rows = await page_cur.fetchall()
            count_row = await count_cur.fetchone()
        history = [_summary(r) for r in rows]
        next_cursor = None
        if len(history) == limit:
            next_cursor = encode_cursor(history[-1].created_at, str(history[-1].id))
        total = int(count_row[0]) if count_row else 0
        active = _version(active_row) if active_row is not None else None
        return Response(
            PoliciesOut(active=active, history=history),
            headers=page_headers(request, total, next_cursor),
        )

    @get(
        "/{version_id:int}",
        operation_id="getPolicyVersion",
        responses=error_responses(400, 401, 404),
    )
    async def get_policy_version(
        self, pool: PoolDep, version_id: FromPath[int]
    ) -> PolicyVersionOut:
        """One version with its YAML text; 404 ``{"error": "policy version not found"}``."""
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT " + _COLUMNS + ", yaml FROM policy_versions WHERE id = %s", (version_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise not_found("policy version")
        return _version(row)

    @post(
        "/validate",
        operation_id="validatePolicy",
        status_code=200,
        request_max_body_size=MAX_BODY,
        operation_class=_PolicyTextOperation,
        responses={
            **error_responses(400, 401),
            **_INVALID,
            200: ResponseSpec(data_container=PolicyValid, description="The text compiles"),
        },
    )
    async def validate_policy(
        self, request: Request[Any, Any, Any]
    ) -> Response[PolicyValid | PolicyInvalid]:
        """Compile a policy text without storing it: 200 with its rule names, or 422 with the
        problem and its line (``errors[0].line``), exactly as a proxy would refuse it."""
        text = await _policy_text(request)
        try:
            policies = load_policy_text(text, "policy")
        except PolicyError as e:
            return _invalid(e)
        return Response(
            PolicyValid(
                valid=True, rule_count=len(policies), rules=[r.name for r in policies.rules]
            )
        )

    @put(
        "/",
        operation_id="putPolicy",
        status_code=201,
        request_max_body_size=MAX_BODY,
        operation_class=_PolicyTextOperation,
        responses={
            **error_responses(400, 401),
            **_INVALID,
            200: ResponseSpec(
                data_container=PolicyVersionOut,
                description="The text is the active version's already: nothing stored",
            ),
            201: ResponseSpec(data_container=PolicyVersionOut, description="The new version"),
        },
    )
    async def put_policy(
        self, request: Request[Any, Any, Any], pool: PoolDep
    ) -> Response[PolicyVersionOut | PolicyInvalid]:
        """Make a text the active policy: 201 with the new version (every proxy applies it
        within a second), 200 with the active version when the text is already active, 422
        (nothing stored) when it does not compile.

        Writes ``policy.put`` to the audit log (version ids and checksums, not the text).
        """
        text = await _policy_text(request)
        try:
            policies = load_policy_text(text, "policy")
        except PolicyError as e:
            return _invalid(e)
        checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        async with pool.connection() as conn, conn.transaction():
            # Serialises writers of versions (other PUTs; proxies publishing their file wait
            # on it too) so that two identical PUTs make one version, not two.
            await conn.execute("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
            active = await _active(conn)
            if active is not None and active.checksum == checksum:
                return Response(active, status_code=200)
            cur = await conn.execute(
                "INSERT INTO policy_versions (who, source, checksum, rule_count, yaml)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING " + _COLUMNS + ", yaml",
                (audit.ACTOR, SOURCE, checksum, len(policies), text),
            )
            row = await cur.fetchone()
            assert row is not None
            new = _version(row)
            await audit.record(
                conn,
                "policy.put",
                "policy",
                {"id": active.id, "checksum": active.checksum} if active is not None else None,
                {"id": new.id, "checksum": new.checksum},
            )
        return Response(new, status_code=201)
