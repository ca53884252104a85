"""Manage the `X-API-Key` keys of the scoring routes (table `api_keys`, sql/005_scoring.sql).

    scripts/govrix apikey create --customer acme --tier pro     # prints the key, once
    scripts/govrix apikey list [--customer acme]
    scripts/govrix apikey revoke KEY_ID

The database is `--database-url`, else `GOVRIX_DATABASE_URL`, else the embedded cluster (started
and migrated on demand, as the stack does: `scripts/database.py`). Only the key's sha256 is
stored, so a lost key cannot be shown again: revoke it and create another. The functions are
those of the `/api/v1/keys` routes (`api/keys.py`); each change is written to `audit_log` with
`who = 'cli'`.
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from api.keys import TIER_TAGS, InvalidKeyRequest, create_key, list_keys, revoke_key
from scripts import database

# The command's own names for the functions tests and benchmarks import from here.
__all__ = ["create_key", "list_keys", "main", "revoke_key"]


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
            except InvalidKeyRequest as e:
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
