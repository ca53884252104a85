"""Manage the `X-API-Key` keys of the scoring routes (table `api_keys`, sql/005_scoring.sql).

    scripts/govrix apikey create --customer acme --tier pro     # prints the key, once
    scripts/govrix apikey list [--customer acme]
    scripts/govrix apikey revoke KEY_ID

The database is `--database-url`, else `GOVRIX_DATABASE_URL`, else the embedded cluster (started
and migrated on demand, as the stack does: `scripts/database.py`). Only the key's sha256 is
stored, so a lost key cannot be shown again: revoke it and create another.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
from typing import Any

import psycopg

from api.actions.auth import PREFIX_LEN, TIER_TAGS, generate_key, hash_key
from scripts import database

# Customer ids appear in URL paths (/scores/{customer_id}); "event" would shadow /scores/event/.
_CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def create_key(conn: psycopg.Connection[Any], customer_id: str, tier: str) -> tuple[str, str]:
    """Store a new key; returns (key id, key). The key is not retrievable afterwards."""
    if not _CUSTOMER.match(customer_id) or customer_id == "event":
        raise ValueError("customer id: 1-128 of A-Z a-z 0-9 _ . - and not 'event'")
    if tier not in TIER_TAGS:
        raise ValueError(f"tier must be one of {', '.join(TIER_TAGS)}")
    key = generate_key(tier)
    key_id = "key_" + secrets.token_hex(8)
    with conn.transaction():
        conn.execute(
            "INSERT INTO api_keys (id, key_hash, prefix, customer_id, tier)"
            " VALUES (%s, %s, %s, %s, %s)",
            (key_id, hash_key(key), key[:PREFIX_LEN], customer_id, tier),
        )
    return key_id, key


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> bool:
    """Revoke a key by id; False when no live key has this id."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (key_id,),
        )
    return cur.rowcount == 1


def list_keys(conn: psycopg.Connection[Any], customer_id: str | None) -> list[tuple[Any, ...]]:
    """(id, prefix, customer_id, tier, created_at, revoked_at) per key, oldest first."""
    return conn.execute(
        "SELECT id, prefix, customer_id, tier, created_at, revoked_at FROM api_keys"
        " WHERE %(c)s::text IS NULL OR customer_id = %(c)s ORDER BY created_at, id",
        {"c": customer_id},
    ).fetchall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="govrix apikey",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database-url", help="default: GOVRIX_DATABASE_URL, else embedded")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("--customer", required=True)
    c.add_argument("--tier", required=True, choices=sorted(TIER_TAGS))
    ls = sub.add_parser("list", help="list keys (prefixes only)")
    ls.add_argument("--customer")
    r = sub.add_parser("revoke", help="revoke a key by id")
    r.add_argument("key_id")
    args = parser.parse_args(argv)
    try:
        url = database.ready(args.database_url).url
    except database.DatabaseError as e:
        print(f"govrix: apikey: {e}", file=sys.stderr)
        return 1

    with psycopg.connect(url, autocommit=True) as conn:
        if args.command == "create":
            try:
                key_id, key = create_key(conn, args.customer, args.tier)
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(key)
            print(f"id {key_id}: store the key now, it is not shown again", file=sys.stderr)
        elif args.command == "list":
            for key_id, prefix, customer, tier, created, revoked in list_keys(conn, args.customer):
                state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
                print(f"{key_id}  {prefix}…  {customer}  {tier}  {created:%Y-%m-%d %H:%M}  {state}")
        elif not revoke_key(conn, args.key_id):
            print(f"error: no active key {args.key_id}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
