"""Migrations apply on an empty database, and a second run is a no-op."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from scripts import migrate


def test_template_has_every_migration(db: psycopg.Connection[Any]) -> None:
    names = [r[0] for r in db.execute("SELECT name FROM govrix_migrations ORDER BY name")]
    assert names == [m.name for m in migrate.discover()]


def test_second_run_is_noop(dsn: str, db: psycopg.Connection[Any]) -> None:
    before = db.execute("SELECT count(*) FROM govrix_migrations").fetchone()
    assert migrate.apply(dsn) == []
    assert db.execute("SELECT count(*) FROM govrix_migrations").fetchone() == before


def test_apply_on_empty_database(dsn: str, db: psycopg.Connection[Any]) -> None:
    # A name of its own: concurrent test runs may share one PostgreSQL server.
    probe = f"govrix_empty_probe_{uuid.uuid4().hex[:10]}"
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(probe)))
    try:
        empty = psycopg.conninfo.conninfo_to_dict(dsn) | {"dbname": probe}
        url = psycopg.conninfo.make_conninfo(**empty)  # type: ignore[arg-type]
        assert migrate.apply(url) == [m.name for m in migrate.discover()]
        assert migrate.apply(url) == []
        with psycopg.connect(url) as conn:
            storage = conn.execute(
                "SELECT value FROM govrix_settings WHERE key = 'events_storage'"
            ).fetchone()
            assert storage == ("partitioned",)
            idx = {
                r[0]
                for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
            }
            assert {"events_agent_ts_idx", "events_session_ts_idx", "events_ts_brin_idx"} <= idx
    finally:
        db.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(probe)))


def test_edited_migration_is_refused(dsn: str, tmp_path: Any) -> None:
    for m in migrate.discover():
        (tmp_path / m.name).write_text(m.sql)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        migrate.apply(dsn, tmp_path)
