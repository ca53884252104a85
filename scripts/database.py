"""The database every operator command works on, found one way (DESIGN.md §2).

An explicit URL (a command's ``--database-url`` or argument), else ``GOVRIX_DATABASE_URL``, else
the embedded cluster of this checkout (``scripts/pgembed.py``), started and given its database on
demand; then the migrations, so a command run before the first ``up`` finds its tables. The
stack, ``apikey``, ``migrate``, ``replay``, ``gen_events`` and the test suite all call ``ready``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg

from scripts import migrate, pgembed


class DatabaseError(RuntimeError):
    """No database to work on; the message says why and what to do."""


@dataclass(frozen=True)
class Database:
    url: str
    #: The embedded cluster of this checkout (not an operator's server).
    embedded: bool
    #: Migrations applied by this call (empty when the schema was up to date).
    applied: tuple[str, ...] = ()


def locate(explicit: str | None = None, env: Mapping[str, str] = os.environ) -> Database:
    """Where the database is, starting the embedded cluster when that is the one."""
    url = explicit or env.get("GOVRIX_DATABASE_URL")
    if url:
        return Database(url, embedded=False)
    try:
        c = pgembed.start()
        pgembed.ensure_database(c)
    except pgembed.EmbeddedError as e:
        raise DatabaseError(f"cannot start the embedded PostgreSQL: {e}") from e
    except psycopg.Error as e:
        raise DatabaseError(f"the embedded PostgreSQL does not answer: {e}") from e
    return Database(c.url(), embedded=True)


def ready(explicit: str | None = None, env: Mapping[str, str] = os.environ) -> Database:
    """``locate``, then apply the migrations that are missing."""
    db = locate(explicit, env)
    try:
        applied = migrate.apply(db.url)
    except migrate.MigrationError as e:
        raise DatabaseError(str(e)) from e
    except psycopg.OperationalError as e:
        raise DatabaseError(f"cannot connect to {redact(db.url)}: {e}") from e
    return Database(db.url, db.embedded, tuple(applied))


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
