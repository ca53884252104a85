"""The batch writer against a real PostgreSQL: exactly once, field for field, through outages."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from addon.spool import Spool
from addon.writer import AgentSighting, BatchWriter
from scripts import migrate, pgembed
from scripts.fakedata import fetch_events, make_events

ROOT = Path(__file__).resolve().parent.parent


def count(
    conn: psycopg.Connection[Any], sql: str = "SELECT count(*), count(DISTINCT id) FROM events"
) -> tuple[Any, ...]:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


def test_10k_events_arrive_exactly_once_field_for_field(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    events = make_events(10_000)
    w = BatchWriter(dsn, tmp_path).start()
    for ev in events:
        w.enqueue(ev)
    assert w.flush(60)
    w.stop()
    assert count(db) == (10_000, 10_000)
    stored = fetch_events(db)
    assert stored == sorted(events, key=lambda e: e.id)
    s = w.stats
    assert (s.enqueued, s.written, s.spooled, s.replayed, s.dropped, s.rejected) == (
        10_000,
        10_000,
        0,
        0,
        0,
        0,
    )
    # sessions table carries each chain's head and counters
    heads = {
        r[0]: r[1:] for r in db.execute("SELECT id, event_count, head_seq, head_hash FROM sessions")
    }
    for sid in {e.session_id for e in events}:
        mine = [e for e in events if e.session_id == sid]
        last = max(mine, key=lambda e: e.seq)
        assert heads[sid] == (len(mine), last.seq, last.lineage_hash)


def test_notify_after_commit_carries_max_id(dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN govrix_events")
        events = make_events(150)
        w = BatchWriter(dsn, tmp_path).start()
        for ev in events:
            w.enqueue(ev)
        assert w.flush(30)
        w.stop()
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=10)]
    assert payloads, "no NOTIFY govrix_events after commit"
    assert max(payloads) == max(e.id for e in events)


def test_full_buffer_spills_to_spool_without_blocking(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    w = BatchWriter(dsn, tmp_path, capacity=100)  # not started: nothing drains
    events = make_events(250)
    t0 = time.perf_counter()
    for ev in events:
        w.enqueue(ev)
    assert time.perf_counter() - t0 < 5  # sanity only: enqueue never waits on the database
    assert w.stats.spooled == 150 and w.stats.depth() == 100
    w.start()
    assert w.flush(30)
    w.stop()
    assert count(db) == (250, 250)
    assert (w.stats.written, w.stats.replayed, w.stats.dropped) == (100, 150, 0)


def test_replay_is_idempotent_when_a_batch_committed_before_the_break(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    events = make_events(300)
    w = BatchWriter(dsn, tmp_path).start()
    for ev in events[:200]:
        w.enqueue(ev)
    assert w.flush(30)
    w.stop()
    # The connection "broke" after commit: the writer could not know, and spooled the batch.
    spool = Spool(tmp_path / "events.spool")
    spool.append(events[100:200])
    spool.append(events[200:300])
    spool.close()
    w2 = BatchWriter(dsn, tmp_path).start()
    assert w2.flush(30)
    w2.stop()
    assert count(db) == (300, 300)
    assert w2.stats.replayed == 100  # only the genuinely new rows count
    assert db.execute("SELECT sum(event_count) FROM sessions").fetchone() == (300,)
    assert (tmp_path / "events.spool").stat().st_size == 0


def test_torn_spool_tail_is_cut_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "events.spool")
    spool.append(make_events(5))
    spool.close()
    with open(tmp_path / "events.spool", "ab") as f:
        f.write(b"GVX1\x00\x00\x10\x00garbage")  # an append cut short by a crash
    spool = Spool(tmp_path / "events.spool")
    assert spool.torn_records == 1
    assert [len(b) for _, b in spool.records()] == [5]
    spool.close()


def test_rejected_row_goes_to_dead_letter_not_the_floor(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    events = make_events(50)
    events[10].direction = "sideways"  # violates the CHECK constraint
    w = BatchWriter(dsn, tmp_path).start()
    for ev in events:
        w.enqueue(ev)
    assert w.flush(30)
    w.stop()
    assert count(db) == (49, 49)
    assert w.stats.rejected == 1 and w.stats.dropped == 0
    dead = (tmp_path / "deadletter.jsonl").read_text().splitlines()
    assert len(dead) == 1 and events[10].id in dead[0]


def test_agents_are_registered_without_touching_status(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    w = BatchWriter(dsn, tmp_path).start()
    w.sight_agent(AgentSighting("agt_a", "billing-agent", "10.0.0.5", "proxy_auth", now))
    assert w.flush(10)
    db.execute("UPDATE agents SET status = 'blocked' WHERE id = 'agt_a'")
    w.sight_agent(
        AgentSighting(
            "agt_a", "billing-agent", "10.0.0.6", "proxy_auth", now + timedelta(seconds=5)
        )
    )
    assert w.flush(10)
    w.stop()
    row = db.execute(
        "SELECT status, source_ip, last_seen_at FROM agents WHERE id = 'agt_a'"
    ).fetchone()
    assert row is not None
    assert row[0] == "blocked" and row[1] == "10.0.0.6" and row[2] == now + timedelta(seconds=5)


# -- partitions ---------------------------------------------------------------------------------


def partitions(db: psycopg.Connection[Any]) -> list[str]:
    return [
        r[0]
        for r in db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
        )
    ]


def test_yesterday_today_tomorrow_and_an_old_day(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    batches = [make_events(20, start=now + timedelta(days=d), seed=d + 50) for d in (-1, 0, 1, -40)]
    w = BatchWriter(dsn, tmp_path).start()
    for b in batches:
        for ev in b:
            w.enqueue(ev)
    assert w.flush(30)
    w.stop()
    assert count(db) == (80, 80)
    old_day = (now - timedelta(days=40)).strftime("events_%Y%m%d")
    assert old_day in partitions(db), "a partition is created on demand for an old day"


def test_retention_drops_only_partitions_older_than_n_days(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    today = datetime.now(UTC).date()
    db.execute(
        "SELECT govrix_ensure_partitions(%s, %s)",
        (today - timedelta(days=12), today + timedelta(days=2)),
    )
    before = partitions(db)
    dropped = [r[0] for r in db.execute("SELECT govrix_drop_partitions_older_than(7)")]
    after = partitions(db)
    cutoff = today - timedelta(days=7)
    assert dropped == [p for p in before if datetime.strptime(p[7:], "%Y%m%d").date() < cutoff]
    assert len(dropped) == 5
    assert all(datetime.strptime(p[7:], "%Y%m%d").date() >= cutoff for p in after)
    assert set(after) | set(dropped) == set(before)


# -- a real outage: the database is stopped mid-run and started again -------------------------


@pytest.fixture
def own_cluster() -> Iterator[pgembed.Cluster]:
    """A private PostgreSQL cluster this test may stop and start."""
    home = ROOT / ".govrix" / "test-clusters" / f"outage-{time.monotonic_ns()}"
    c = pgembed.Cluster(home)
    pgembed.start(c)
    pgembed.ensure_database(c)
    migrate.apply(c.url())
    try:
        yield c
    finally:
        pgembed.stop(c, mode="immediate")
        shutil.rmtree(home, ignore_errors=True)
        if c.base != c.state:  # a private checkout keeps the cluster under /var/lib/govrix
            shutil.rmtree(c.base, ignore_errors=True)


def test_database_stopped_mid_run_loses_nothing(
    own_cluster: pgembed.Cluster, tmp_path: Path
) -> None:
    events = make_events(10_000)
    w = BatchWriter(own_cluster.url(), tmp_path, reconnect_delay=0.2, connect_timeout=1).start()

    def produce() -> None:
        for i, ev in enumerate(events):
            w.enqueue(ev)
            if i % 50 == 0:
                time.sleep(0.01)  # ~2 s of steady traffic

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.5)
    pgembed.stop(own_cluster, mode="immediate")
    time.sleep(1.5)  # traffic goes on while the database is down
    producer.join()
    assert w.stats.spooled > 0, "nothing was spooled while the database was down"
    pgembed.start(own_cluster)
    assert w.flush(60), f"writer did not drain: {w.stats.snapshot()}"
    w.stop()
    with psycopg.connect(own_cluster.url()) as conn:
        assert count(conn) == (10_000, 10_000)
        assert fetch_events(conn) == sorted(events, key=lambda e: e.id)
    s = w.stats
    print("outage story:", s.snapshot())
    assert s.dropped == 0 and s.rejected == 0
    assert s.written + s.replayed + s.already_present == 10_000
    assert s.reconnects >= 1 and s.failed_batches + s.spooled > 0
    assert (tmp_path / "events.spool").stat().st_size == 0


def test_events_after_stop_are_spooled_and_replayed_at_next_start(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    events = make_events(3)
    w = BatchWriter(dsn, tmp_path).start()
    w.enqueue(events[0])
    w.stop()
    w.enqueue(events[1])  # e.g. a response recorded while the proxy shuts down
    w.enqueue(events[2])
    assert w.stats.spooled == 2 and w.stats.dropped == 0
    w2 = BatchWriter(dsn, tmp_path).start()
    assert w2.flush(30)
    w2.stop()
    assert count(db) == (3, 3)


# -- durability reported to the recorder (what lets the proxy forget a capture) -----------------


def test_durable_callback_names_every_event_committed_or_spooled(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    durable: list[str] = []
    w = BatchWriter(dsn, tmp_path, capacity=100, on_durable=durable.extend)  # not started yet
    events = make_events(250)
    for ev in events:
        w.enqueue(ev)
    # the buffer took 100; 150 went to the spool file, durable before the writer even runs
    assert sorted(durable) == sorted(e.id for e in events[100:])
    durable.clear()
    w.start()
    assert w.flush(30)
    w.stop()
    assert count(db) == (250, 250)
    # the buffered ones by their commit (the spooled ones are named again by their replay)
    assert {e.id for e in events[:100]} <= set(durable) <= {e.id for e in events}


def test_events_stored_already_are_counted_already_present_not_rejected(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A recorder that replaced a dead one is sent captures whose events may be stored."""
    events = make_events(150)
    durable: list[str] = []
    w = BatchWriter(dsn, tmp_path, on_durable=durable.extend).start()
    for ev in events[:100]:
        w.enqueue(ev)
    assert w.flush(30)
    for ev in events[50:]:  # 50 of them again, same ids
        w.enqueue(ev)
    assert w.flush(30)
    w.stop()
    assert count(db) == (150, 150)
    s = w.stats
    assert (s.written, s.already_present, s.rejected, s.dropped) == (150, 50, 0, 0)
    assert s.written + s.replayed + s.already_present == s.enqueued == 200
    assert not (tmp_path / "deadletter.jsonl").exists()
    assert sorted(durable) == sorted(e.id for e in events[:100] + events[50:])
    assert db.execute("SELECT sum(event_count) FROM sessions").fetchone() == (150,)
