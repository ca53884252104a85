"""Policy versions in a real PostgreSQL: applied within a second, refused when bad, file published.

Each test gets a fresh migrated database (``dsn``/``db``, tests/conftest.py) and runs the real
listener thread (:class:`addon.policy.sync.PolicySync`) against it; every wait is a condition
with a deadline.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from addon.metrics import CallbackCollector
from addon.policy.store import PolicyStore, checksum
from addon.policy.sync import PolicySync, export_metrics
from tests.proxyharness import wait_for


def rule(model: str, name: str = "deny") -> str:
    return (
        f"version: 1\nrules:\n  - name: {name}\n"
        f"    when: [{{field: model, op: eq, value: {model}}}]\n    action: block\n"
    )


BAD = "version: 1\nrules:\n  - name: broken\n    when: []\n    action: explode\n"
WHO = f"proxy:{socket.gethostname()}"


def insert(db: psycopg.Connection[Any], text: str, source: str = "api") -> int:
    row = db.execute(
        "INSERT INTO policy_versions (who, source, checksum, rule_count, yaml) "
        "VALUES ('test', %s, %s, 0, %s) RETURNING id",
        (source, checksum(text), text),
    ).fetchone()
    assert row is not None
    return int(row[0])


def versions(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT id, who, source, checksum, rule_count, yaml FROM policy_versions ORDER BY id"
    ).fetchall()


def blocks(store: PolicyStore, model: str) -> bool:
    return store.evaluate({"model": model}).block is not None


def within(seconds: float, fn: Callable[[], Any]) -> float:
    """Wait for ``fn`` with a deadline of ``seconds``; return how long it took."""
    start = time.monotonic()
    wait_for(fn, timeout=seconds, interval=0.005)
    return time.monotonic() - start


@pytest.fixture
def syncs() -> Iterator[list[PolicySync]]:
    """Started syncs, stopped at the end of the test whatever happens."""
    made: list[PolicySync] = []
    yield made
    for s in made:
        s.stop()


def started(syncs: list[PolicySync], store: PolicyStore, dsn: str, **kw: Any) -> PolicySync:
    s = PolicySync(store, dsn, **kw).start()
    syncs.append(s)
    return s


def write(path: Path, text: str, mtime: float | None = None) -> None:
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


# -- versions from the database ---------------------------------------------------------------


def test_new_version_applies_within_a_second(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync]
) -> None:
    store = PolicyStore()
    # A long fallback interval: only NOTIFY can make the deadline.
    sync = started(syncs, store, dsn, interval=60)
    wait_for(lambda: sync.live)
    assert store.active.origin == "none" and not blocks(store, "o1")

    text = rule("o1")
    vid = insert(db, text)
    within(1.0, lambda: store.active.version == vid)
    assert blocks(store, "o1") and not blocks(store, "gpt-4o")
    assert store.active.checksum == checksum(text) and store.active.source == "api"
    assert store.active.rules == 1 and store.generation == 1
    assert sync.listener.stats.notifications >= 1


def test_newest_version_at_start_is_applied(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync]
) -> None:
    insert(db, rule("o1"))
    newest = insert(db, rule("gpt-4o"))
    store = PolicyStore()
    started(syncs, store, dsn, interval=60)
    within(5.0, lambda: store.active.version == newest)
    assert blocks(store, "gpt-4o") and not blocks(store, "o1")


def test_bad_version_keeps_rules_is_counted_once_and_not_retried(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync]
) -> None:
    good = insert(db, rule("o1"))
    store = PolicyStore()
    sync = started(syncs, store, dsn, interval=0.05)
    within(5.0, lambda: store.active.version == good)

    bad = insert(db, BAD)
    within(1.0, lambda: store.rejected["version"] == 1)
    assert store.active.version == good and blocks(store, "o1")
    assert store.last_error is not None and f"policy version {bad}:5" in str(store.last_error)
    # Many fallback refreshes later the same bad version is still counted once.
    refreshes = sync.listener.stats.refreshes
    wait_for(lambda: sync.listener.stats.refreshes >= refreshes + 5)
    assert store.rejected["version"] == 1 and store.active.version == good

    fixed = insert(db, rule("gpt-4o"))
    within(1.0, lambda: store.active.version == fixed)
    assert blocks(store, "gpt-4o") and not blocks(store, "o1") and store.last_error is None


def test_bad_version_with_no_rules_ever_loaded_means_no_policy(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync]
) -> None:
    insert(db, BAD)
    store = PolicyStore()
    started(syncs, store, dsn, interval=60)
    within(5.0, lambda: store.rejected["version"] == 1)
    assert store.active.origin == "none" and len(store.current) == 0


def test_lost_notification_is_caught_by_the_periodic_reread(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync]
) -> None:
    store = PolicyStore()
    sync = started(syncs, store, dsn, interval=0.2)
    wait_for(lambda: sync.live)
    db.execute("ALTER TABLE policy_versions DISABLE TRIGGER policies_notify")
    vid = insert(db, rule("o1"))
    within(2.0, lambda: store.active.version == vid)
    assert sync.listener.stats.notifications == 0


def test_apply_version_leaves_a_file_loaded_meanwhile(tmp_path: Path) -> None:
    """A file edited while the sync read the database is newer than what it read."""
    path = tmp_path / "p.yaml"
    write(path, rule("o1"))
    store = PolicyStore(path)
    before = store.generation
    store.load()
    assert not store.apply_version(7, rule("gpt-4o"), "api", unless_changed_since=before)
    assert store.active.origin == "file" and blocks(store, "o1") and store.rejected["version"] == 0


# -- the policy file as a source -------------------------------------------------------------


def test_file_is_published_once_and_applied_as_that_version(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    text = rule("o1")
    write(path, text)
    store = PolicyStore(path)
    store.load()
    sync = started(syncs, store, dsn, interval=0.05)
    rows = wait_for(lambda: versions(db))
    assert [r[1:] for r in rows] == [(WHO, f"file:{path.resolve()}", checksum(text), 1, text)]
    within(1.0, lambda: store.active.version == rows[0][0])
    assert blocks(store, "o1") and store.active.checksum == checksum(text)
    # Refreshes go on; nothing more is inserted for the same text.
    refreshes = sync.listener.stats.refreshes
    wait_for(lambda: sync.listener.stats.refreshes >= refreshes + 5)
    assert len(versions(db)) == 1 and sync.published == 1


def test_two_proxies_sharing_a_file_insert_each_text_once(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    write(path, rule("o1"))
    stores = [PolicyStore(path), PolicyStore(path)]
    for store in stores:
        store.load()
    for i, store in enumerate(stores):
        started(syncs, store, dsn, interval=0.05, who=f"proxy:p{i}")
    wait_for(lambda: all(s.active.version is not None for s in stores))

    second = rule("gpt-4o")
    write(path, second, mtime=time.time() + 1)
    for store in stores:
        assert store.maybe_reload()
        assert blocks(store, "gpt-4o")  # locally at once, before any database round trip
    within(
        2.0,
        lambda: all(
            s.active.version is not None and s.active.checksum == checksum(second) for s in stores
        ),
    )
    rows = versions(db)
    assert [r[3] for r in rows] == [checksum(rule("o1")), checksum(second)]
    assert stores[0].active.version == stores[1].active.version == rows[-1][0]
    assert sum(s.published for s in syncs) == 2


def test_file_already_stored_is_not_inserted_again_at_start(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    text = rule("o1")
    write(path, text)
    vid = insert(db, text, source=f"file:{path.resolve()}")
    store = PolicyStore(path)
    store.load()
    sync = started(syncs, store, dsn, interval=60)
    within(5.0, lambda: store.active.version == vid)
    assert len(versions(db)) == 1 and sync.published == 0


def test_api_version_newer_than_the_file_wins_at_start(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync], tmp_path: Path
) -> None:
    """A file unchanged since before the last PUT does not override it at a restart."""
    path = tmp_path / "p.yaml"
    write(path, rule("o1"), mtime=time.time() - 3600)
    api = insert(db, rule("gpt-4o"))
    store = PolicyStore(path)
    store.load()
    assert blocks(store, "o1")  # the file, until the database answers
    sync = started(syncs, store, dsn, interval=60)
    within(5.0, lambda: store.active.version == api)
    assert blocks(store, "gpt-4o") and not blocks(store, "o1")
    assert len(versions(db)) == 1 and sync.published == 0


def test_bad_file_is_never_published(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    write(path, rule("o1"))
    store = PolicyStore(path)
    store.load()
    sync = started(syncs, store, dsn, interval=0.05)
    first = wait_for(lambda: store.active.version)
    write(path, BAD, mtime=time.time() + 1)
    assert not store.maybe_reload()
    assert store.rejected["file"] == 1
    refreshes = sync.listener.stats.refreshes
    wait_for(lambda: sync.listener.stats.refreshes >= refreshes + 5)
    assert len(versions(db)) == 1 and store.active.version == first and blocks(store, "o1")


def test_file_changed_while_the_database_is_away_applies_then_is_published(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    write(path, rule("o1"))
    store = PolicyStore(path)
    store.load()
    sync = started(syncs, store, dsn, interval=0.05, reconnect_delay=0.05)
    wait_for(lambda: store.active.version is not None)
    dbname = sql.Identifier(db.info.dbname)
    # A database cannot refuse connections from a session inside it: say it from another one.
    admin = psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname="postgres"), autocommit=True)

    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(dbname))
    try:
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'govrix-policies' AND datname = current_database()"
        )
        wait_for(lambda: not sync.live and sync.listener.stats.last_error)
        second = rule("gpt-4o")
        write(path, second, mtime=time.time() + 1)
        assert store.maybe_reload()
        assert blocks(store, "gpt-4o") and store.active.origin == "file"
        assert len(versions(db)) == 1
    finally:
        with admin:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(dbname))
    within(5.0, lambda: store.active.version is not None)
    rows = versions(db)
    assert [r[3] for r in rows][-1] == checksum(second) and len(rows) == 2
    assert store.active.version == rows[-1][0] and blocks(store, "gpt-4o")


# -- what an operator sees ---------------------------------------------------------------------


def test_metrics_name_the_version_in_force(
    dsn: str, db: psycopg.Connection[Any], syncs: list[PolicySync]
) -> None:
    store = PolicyStore()
    sync = started(syncs, store, dsn, interval=60)
    live = CallbackCollector()
    export_metrics(live, store, sync)

    def samples() -> dict[str, list[tuple[dict[str, str], float]]]:
        return {fam.name: [(s.labels, s.value) for s in fam.samples] for fam in live.collect()}

    assert samples()["govrix_policy_version"] == [({}, 0.0)]
    text = rule("o1")
    vid = insert(db, text)
    within(1.0, lambda: store.active.version == vid)
    insert(db, BAD)
    within(1.0, lambda: store.rejected["version"] == 1)
    got = samples()
    assert got["govrix_policy_version"] == [({}, float(vid))]
    assert got["govrix_policy_rules"] == [({}, 1.0)]
    assert got["govrix_policy_info"] == [
        ({"version": str(vid), "checksum": checksum(text), "origin": "version"}, 1.0)
    ]
    assert ({"origin": "version"}, 1.0) in got["govrix_policy_rejected"]
    assert got["govrix_policy_sync_live"] == [({}, 1.0)]
