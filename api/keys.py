"""Scoring API keys (``X-API-Key``, table ``api_keys``, sql/005): create, list, revoke.

One module for both ways in: the ``/api/v1/keys`` routes (async, below) and
``scripts/govrix apikey`` (:func:`create_key`, :func:`list_keys`, :func:`revoke_key` on a
synchronous connection). Both share the checks, the generated key, the SQL and the audit rows;
only the connection differs.

Only the key's sha256 digest is stored; the key itself is returned once, by the call that
creates it. A revocation sets ``revoked_at`` once: revoking a revoked key changes nothing (the
route answers the key as it is, the command says there is no active key). The scoring routes
cache valid keys for ``GOVRIX_APIKEY_CACHE_SECONDS`` (api/actions/auth.py, default 5 s): a key
revoked through this API stops working at once in the process that served the ``DELETE``, and
within that delay in every other process (other API instances, and all of them after a
revocation from the command line).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import msgspec
import psycopg
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from psycopg import AsyncConnection, sql

from api import audit
from api.errors import ApiError, error_responses, not_found
from api.events import Limit, Offset, PoolDep
from api.pagination import LIMIT_DEFAULT, PAGE_HEADERS, fetch_page, page_headers

Tier = Literal["starter", "pro", "enterprise"]
TIER_TAGS: dict[str, str] = {"starter": "sta", "pro": "pro", "enterprise": "ent"}
#: "sk-ent-1a2b3" ... enough to recognise a key in a list, useless to an attacker.
PREFIX_LEN = 12
# Customer ids appear in URL paths (/scores/{customer_id}); "event" would shadow /scores/event/.
_CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_COLUMNS = "id, prefix, customer_id, tier, created_at, revoked_at"


def hash_key(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def generate_key(tier: str) -> str:
    """A new key, ``sk-<tier>-<40 hex>`` (160 random bits)."""
    return f"sk-{TIER_TAGS[tier]}-{secrets.token_hex(20)}"


class InvalidKeyRequest(ValueError):
    """A customer id or tier a key cannot have; ``field`` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class KeyOut(msgspec.Struct, kw_only=True):
    """A scoring key as listed: never its hash, never the key."""

    id: str
    prefix: str
    customer_id: str
    tier: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut, kw_only=True):
    """``POST /api/v1/keys``: the key itself, shown this once (only its digest is stored)."""

    key: str


class KeyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/keys``."""

    customer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    tier: Tier


class _NewKey(msgspec.Struct, frozen=True):
    key: str
    row: tuple[str, bytes, str, str, str]  # id, key_hash, prefix, customer_id, tier

    @property
    def id(self) -> str:
        return self.row[0]

    def audit_after(self) -> dict[str, str]:
        """What ``key.create`` records: never the key or its hash."""
        key_id, _, prefix, customer_id, tier = self.row
        return {"id": key_id, "prefix": prefix, "customer_id": customer_id, "tier": tier}


def _new_key(customer_id: str, tier: str) -> _NewKey:
    """Check the request and make the key; :class:`InvalidKeyRequest` names the field at fault."""
    if not _CUSTOMER.match(customer_id) or customer_id == "event":
        raise InvalidKeyRequest(
            "customer_id", "customer id: 1-128 of A-Z a-z 0-9 _ . - and not 'event'"
        )
    if tier not in TIER_TAGS:
        raise InvalidKeyRequest("tier", f"tier must be one of {', '.join(TIER_TAGS)}")
    key = generate_key(tier)
    key_id = "key_" + secrets.token_hex(8)
    return _NewKey(key, (key_id, hash_key(key), key[:PREFIX_LEN], customer_id, tier))


def _revoke_audit(row: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key.revoke``'s before and after, from the row the revoking ``UPDATE`` returned."""
    after = dict(zip(_COLUMNS.split(", "), row, strict=True))
    after.pop("created_at")
    return after | {"revoked_at": None}, after


_INSERT = (
    "INSERT INTO api_keys (id, key_hash, prefix, customer_id, tier) VALUES (%s, %s, %s, %s, %s)"
    " RETURNING " + _COLUMNS
)
# Only a live key is revoked, so a second revocation keeps the first one's time.
_REVOKE = (
    "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"
    " RETURNING " + _COLUMNS
)
_LIST_ALL = (
    "SELECT " + _COLUMNS + " FROM api_keys"
    " WHERE %(c)s::text IS NULL OR customer_id = %(c)s ORDER BY created_at, id"
)


# --- synchronous: scripts/govrix apikey --------------------------------------------------------


def create_key(
    conn: psycopg.Connection[Any], customer_id: str, tier: str, *, who: str = audit.CLI_ACTOR
) -> tuple[str, str]:
    """Store a new key and its ``key.create`` audit row; returns (key id, key).

    The key is not retrievable afterwards. Raises :class:`InvalidKeyRequest` (a ``ValueError``).
    """
    new = _new_key(customer_id, tier)
    with conn.transaction():
        conn.execute(_INSERT, new.row)
        audit.record_sync(conn, "key.create", f"key:{new.id}", None, new.audit_after(), who=who)
    return new.id, new.key


def revoke_key(conn: psycopg.Connection[Any], key_id: str, *, who: str = audit.CLI_ACTOR) -> bool:
    """Revoke a key by id (with its ``key.revoke`` audit row); False when no live key has it."""
    with conn.transaction():
        row = conn.execute(_REVOKE, (key_id,)).fetchone()
        if row is not None:
            before, after = _revoke_audit(row)
            audit.record_sync(conn, "key.revoke", f"key:{key_id}", before, after, who=who)
    return row is not None


def list_keys(conn: psycopg.Connection[Any], customer_id: str | None) -> list[tuple[Any, ...]]:
    """(id, prefix, customer_id, tier, created_at, revoked_at) per key, oldest first."""
    return conn.execute(_LIST_ALL, {"c": customer_id}).fetchall()


# --- asynchronous: the /api/v1/keys routes -----------------------------------------------------


@runtime_checkable
class KeyCache(Protocol):
    """What caches valid keys in this process (the scoring routes' authenticator)."""

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` from the cache, so its next use is checked in the database."""


async def create_key_async(
    conn: AsyncConnection[Any], customer_id: str, tier: str, *, who: str = audit.ACTOR
) -> KeyCreated:
    """:func:`create_key` on the API's connection; the answer carries the key, once."""
    new = _new_key(customer_id, tier)
    async with conn.transaction():
        row = await (await conn.execute(_INSERT, new.row)).fetchone()
        assert row is not None
        await audit.record(conn, "key.create", f"key:{new.id}", None, new.audit_after(), who=who)
    return KeyCreated(key=new.key, **dict(zip(_COLUMNS.split(", "), row, strict=True)))


async def revoke_key_async(
    conn: AsyncConnection[Any], key_id: str, *, who: str = audit.ACTOR
) -> tuple[KeyOut, bool] | None:
    """Revoke a key: (the key, whether this call revoked it), or None for an unknown id."""
    async with conn.transaction():
        row = await (await conn.execute(_REVOKE, (key_id,))).fetchone()
        if row is not None:
            before, after = _revoke_audit(row)
            await audit.record(conn, "key.revoke", f"key:{key_id}", before, after, who=who)
            return _key_out(row), True
    cur = await conn.execute("SELECT " + _COLUMNS + " FROM api_keys WHERE id = %s", (key_id,))
    existing = await cur.fetchone()
    return (_key_out(existing), False) if existing is not None else None


def _key_out(row: tuple[Any, ...]) -> KeyOut:
    return KeyOut(**dict(zip(_COLUMNS.split(", "), row, strict=True)))


class KeyController(Controller):
    """Scoring API keys: listed by prefix, created (shown once), revoked; every change audited."""

    path = "/keys"
    tags = ["keys"]

    @get(
        "/",
        operation_id="listKeys",
        responses=error_responses(400, 401),
        response_headers=PAGE_HEADERS[:1],
    )
    async def list_keys(
        self,
        request: Request[Any, Any, Any],
        pool: PoolDep,
        customer_id: Annotated[
            str | None, QueryParameter(max_length=128, description="Only this customer's keys.")
        ] = None,
        revoked: Annotated[
            bool | None, QueryParameter(description="Only revoked (true) or live (false) keys.")
        ] = None,
        limit: Limit = LIMIT_DEFAULT,
        offset: Offset = 0,
    ) -> Response[list[KeyOut]]:
        """List keys, oldest first: id, prefix, customer, tier, created and revoked times.

        Never the key or its hash. The total is in ``X-Total-Count``.
        """
        conds: list[sql.Composable] = []
        params: list[Any] = []
        if customer_id is not None:
            conds.append(sql.SQL("customer_id = %s"))
            params.append(customer_id)
        if revoked is not None:
            conds.append(sql.SQL("revoked_at IS NOT NULL" if revoked else "revoked_at IS NULL"))
        where = sql.SQL(" AND ").join(conds or [sql.SQL("TRUE")])
        page_q = sql.SQL(
            "SELECT " + _COLUMNS + " FROM api_keys WHERE {} ORDER BY created_at, id"
            " LIMIT %s OFFSET %s"
        ).format(where)
        count_q = sql.SQL("SELECT count(*) FROM api_keys WHERE {}").format(where)
        rows, total = await fetch_page(pool, page_q, count_q, params, limit, offset)
        return Response([_key_out(r) for r in rows], headers=page_headers(request, total, None))

    @post(
        "/",
        operation_id="createKey",
        status_code=201,
        responses=error_responses(400, 401, 422),
    )
    async def create_key(self, pool: PoolDep, data: JSONBody[KeyIn]) -> KeyCreated:
        """Create a key for ``customer_id`` at ``tier``; the answer's ``key`` is shown only here.

        422 naming ``customer_id`` when it is not 1-128 of ``A-Z a-z 0-9 _ . -`` (or is
        ``event``, which would shadow ``/scores/event/``).
        """
        async with pool.connection() as conn:
            try:
                return await create_key_async(conn, data.customer_id, data.tier)
            except InvalidKeyRequest as e:
                raise ApiError(422, f"invalid {e.field}: {e}", field=e.field) from None

    @delete(
        "/{key_id:str}",
        operation_id="revokeKey",
        status_code=200,
        responses=error_responses(401, 404),
    )
    async def revoke_key(
        self, pool: PoolDep, key_cache: NamedDependency[KeyCache | None], key_id: FromPath[str]
    ) -> KeyOut:
        """Revoke a key; the scoring routes of this process refuse it at once.

        Idempotent: revoking a revoked key answers it unchanged (its first ``revoked_at``, no
        new audit row). 404 ``{"error": "key not found"}`` for an unknown id.
        """
        async with pool.connection() as conn:
            result = await revoke_key_async(conn, key_id)
        if result is None:
            raise not_found("key")
        if key_cache is not None:
            key_cache.forget(key_id)
        return result[0]
