"""Apply ``sql/NNN_*.sql`` in order, once each (DESIGN.md §6).

Each file runs in its own transaction and is recorded in ``govrix_migrations`` with its sha256.
A transaction-level advisory lock serialises concurrent runners (two proxies starting at once).
A file that changed after it was applied is an error: migrations are append-only.

    scripts/govrix migrate            (python -m scripts.migrate [DATABASE_URL])

Without a URL: ``GOVRIX_DATABASE_URL``, else the embedded cluster (``scripts/database.py``).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x60F81C  # arbitrary, constant: "govrix migrations"


class MigrationError(RuntimeError):
    """A migration failed or the applied history does not match the files."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    files = sorted(p for p in sql_dir.glob("*.sql") if _NAME.match(p.name))
    numbers = [p.name[:3] for p in files]
    dupes = {n for n in numbers if numbers.count(n) > 1}
    if dupes:
        raise MigrationError(f"two migrations share a number: {sorted(dupes)}")
    return [Migration(p.name, p.read_text()) for p in files]


def apply(conninfo: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply what is missing; returns the names applied now (empty on a second run)."""
    migrations = discover(sql_dir)
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS govrix_migrations ("
            " name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in migrations:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                row = conn.execute(
                    "SELECT checksum FROM govrix_migrations WHERE name = %s", (m.name,)
                ).fetchone()
                if row is not None:
                    if row[0] != m.checksum:
                        raise MigrationError(
                            f"{m.name} changed after it was applied (checksum {row[0][:12]} in "
                            f"the database, {m.checksum[:12]} on disk); add a new migration instead"
                        )
                    continue
                try:
                    conn.execute(m.sql.encode())
                except psycopg.Error as e:
                    raise MigrationError(f"{m.name} failed: {e}") from e
                conn.execute(
                    "INSERT INTO govrix_migrations (name, checksum) VALUES (%s, %s)",
                    (m.name, m.checksum),
                )
                applied_now.append(m.name)
    return applied_now


def main(argv: list[str]) -> int:
    from scripts import database  # (it applies migrations with this module)

    try:
        db = database.ready(argv[1] if len(argv) > 1 else None)
    except database.DatabaseError as e:
        print(f"govrix: migrate: {e}", file=sys.stderr)
        return 1
    done = db.applied
    print(f"migrations applied: {', '.join(done) if done else 'none (up to date)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
