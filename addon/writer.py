"""The durable batch writer: ring buffer -> binary COPY, spool when PostgreSQL is away.

Producers (proxy hooks) call :meth:`BatchWriter.enqueue`, which never blocks and never touches the
network: the event goes into a bounded buffer (capacity 10,000), or, when the buffer is full, into
the on-disk spool. One background thread drains the buffer every 100 ms, or as soon as 100 events
wait, into one ``COPY ... (FORMAT BINARY)`` per batch, upserts the sessions' chain heads and sends
``NOTIFY govrix_events, '<max id>'`` in the same transaction.

When a batch fails for a connection reason its outcome is unknown (it may have committed just
before the connection broke), so it goes to the spool, and spool records are replayed through a
staging table with ``ON CONFLICT DO NOTHING``: at least once on the wire, exactly once in the
table. While the spool holds anything, it is replayed first so events land in order.

Rows that PostgreSQL rejects for their content (not for the connection) are retried one by one;
a row that still fails is written to ``deadletter.jsonl`` beside the spool, counted and logged.
That file is for database faults only: text PostgreSQL cannot store (NUL, lone surrogates) is
escaped by ``addon/sanitize.py`` before the event is chained, and a row that arrives without it
is escaped here rather than refused. Nothing leaves this module silently.

A row whose id is stored already (a capture the proxy sent again to a new recorder because the
old one died before it could say so) fails the batch's COPY; the staging path then skips it and
counts it as ``already_present``, not as rejected. ``on_durable`` is told the ids of every event
that can no longer be lost with this process: committed, appended to the spool, or dead-lettered.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import psycopg
from psycopg import errors as pgerrors
from psycopg.types.json import set_json_dumps

from addon.event import COLUMNS, PG_TYPES, Event
from addon.sanitize import sanitized_copy
from addon.spool import Spool, SpoolError

log = logging.getLogger("govrix.writer")

_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
_COPY_EVENTS = f"COPY events ({_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE = f"COPY govrix_stage ({_COLS}) FROM STDIN (FORMAT BINARY)"
_CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS govrix_stage "
    "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
# Only rows that were really inserted count towards the sessions table.
_MERGE_STAGE = f"""
WITH ins AS (
    INSERT INTO events ({_COLS}) SELECT {_COLS} FROM govrix_stage
    ON CONFLICT DO NOTHING
    RETURNING id, agent_id, session_id, "timestamp", seq, lineage_hash
)
SELECT id, agent_id, session_id, "timestamp", seq, lineage_hash FROM ins
"""
# Chain heads and the NOTIFY in one statement: one round trip per batch fewer.
_UPSERT_SESSIONS = """
WITH up AS (
INSERT INTO sessions AS s (id, agent_id, started_at, last_event_at, event_count, head_seq, head_hash)
SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[],
                     %s::int8[], %s::int8[], %s::text[])
ON CONFLICT (id) DO UPDATE SET
    started_at    = least(s.started_at, EXCLUDED.started_at),
    last_event_at = greatest(s.last_event_at, EXCLUDED.last_event_at),
    event_count   = s.event_count + EXCLUDED.event_count,
    head_seq      = CASE WHEN EXCLUDED.head_seq > s.head_seq THEN EXCLUDED.head_seq ELSE s.head_seq END,
    head_hash     = CASE WHEN EXCLUDED.head_seq > s.head_seq THEN EXCLUDED.head_hash ELSE s.head_hash END
)
SELECT pg_notify('govrix_events', %s)
"""
_UPSERT_AGENTS = """
INSERT INTO agents AS a (id, name, source_ip, identity_kind, last_seen_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
    last_seen_at = greatest(a.last_seen_at, EXCLUDED.last_seen_at),
    source_ip    = coalesce(EXCLUDED.source_ip, a.source_ip)
"""


@dataclass
class WriterStats:
    """Counters that tell the story of every event (also exported as metrics)."""

    enqueued: int = 0
    written: int = 0
    spooled: int = 0
    replayed: int = 0
    #: spooled events a replay found in the database already (their commit had gone through)
    already_present: int = 0
    dropped: int = 0
    rejected: int = 0
    batches: int = 0
    failed_batches: int = 0
    reconnects: int = 0
    scores_written: int = 0
    scores_dropped: int = 0
    cpu_seconds: float = 0.0
    last_error: str | None = None
    depth: Callable[[], int] = field(default=lambda: 0, repr=False)
    spool_bytes: Callable[[], int] = field(default=lambda: 0, repr=False)

    def snapshot(self) -> dict[str, float | int | str | None]:
        return {
            "enqueued": self.enqueued,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "already_present": self.already_present,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "reconnects": self.reconnects,
            "scores_written": self.scores_written,
            "scores_dropped": self.scores_dropped,
            "buffer_depth": self.depth(),
            "spool_bytes": self.spool_bytes(),
            "cpu_seconds": self.cpu_seconds,
            "last_error": self.last_error,
        }


_INSERT_ACTIONS = """
INSERT INTO actions (customer_id, event_id, agent_id, session_id, action, server_key,
                     resource_key, "timestamp", event)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (customer_id, event_id) DO NOTHING
"""
_INSERT_SCORES = """
INSERT INTO scores (customer_id, event_id, score, risk_level, confidence, reasoning, violations,
                    compliance_refs, mitigations, score_components, scoring_source, scorer_version)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s, %s)
ON CONFLICT (customer_id, event_id) DO NOTHING
"""
MAX_PENDING_SCORES = 10_000


class ScoreRow(msgspec.Struct, gc=False):
    """An action scored inline by the proxy: one ``actions`` row and one ``scores`` row."""

    action: tuple[object, ...]  # the _INSERT_ACTIONS parameters
    score: tuple[object, ...]  # the _INSERT_SCORES parameters


class AgentSighting(msgspec.Struct, gc=False):
    """An agent seen by the proxy: registered on first sight, never changing its status."""

    id: str
    name: str
    source_ip: str | None
    identity_kind: str
    last_seen_at: datetime


def _json_dumps(obj: object) -> bytes:
    return _json_encoder.encode(obj)


_json_encoder = msgspec.json.Encoder()


class BatchWriter:
    """Bounded buffer + background COPY thread + spool. See the module docstring."""

    def __init__(
        self,
        conninfo: str,
        spool_dir: Path,
        *,
        capacity: int = 10_000,
        batch_size: int = 100,
        max_batch: int = 2_000,
        interval: float = 0.1,
        retention_days: int | None = None,
        reconnect_delay: float = 1.0,
        connect_timeout: float = 5.0,
        on_commit: Callable[[list[Event]], None] | None = None,
        on_durable: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_batch = max(max_batch, batch_size)
        self.interval = interval
        self.retention_days = retention_days
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self.on_commit = on_commit
        #: Called (from the writer thread, or from ``enqueue``'s caller when it spools) with the
        #: ids of events now committed, spooled or dead-lettered; again when spooled ones replay.
        self.on_durable = on_durable
        self.spool = Spool(spool_dir / "events.spool")
        self.deadletter_path = spool_dir / "deadletter.jsonl"
        self._buf: collections.deque[Event] = collections.deque()
        self._agents: dict[str, AgentSighting] = {}
        self._agents_lock = threading.Lock()
        self._scores: collections.deque[ScoreRow] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._next_retry = 0.0
        self._next_maintenance = 0.0
        self._partitions_ok: set[date] = set()
        self.stats = WriterStats(
            depth=self._buf.__len__, spool_bytes=lambda: self.spool.pending_bytes
        )

    # -- producer side (any thread; never blocks, never does network I/O) ---------------------

    def enqueue(self, ev: Event) -> None:
        """Hand one event over. Overflow beyond capacity goes to the spool, not to the floor."""
        self.stats.enqueued += 1
        if self._stop.is_set() and self._thread is None:
            # after stop (a call that finished during shutdown): straight to disk, replayed at
            # the next start
            self._spool([ev], reason="writer stopped")
            self.spool.sync()
            self.spool.close()
            return
        if len(self._buf) >= self.capacity:
            self._spool([ev], reason="buffer full")
            return
        self._buf.append(ev)
        if len(self._buf) >= self.batch_size:
            self._wake.set()

    def sight_agent(self, agent: AgentSighting) -> None:
        """Register (or refresh ``last_seen_at`` of) an agent at the next flush."""
        with self._agents_lock:
            self._agents[agent.id] = agent
        self._wake.set()

    def record_score(self, row: ScoreRow) -> None:
        """Store an inline score at the next flush (bounded; overflow is counted and logged)."""
        if len(self._scores) >= MAX_PENDING_SCORES:
            self.stats.scores_dropped += 1
            log.error(
                "inline score dropped: %d scores already wait for PostgreSQL", MAX_PENDING_SCORES
            )
            return
        self._scores.append(row)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> BatchWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="govrix-writer", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Drain what is buffered (to PostgreSQL, else to the spool) and stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._buf:  # thread did not finish in time: keep the rest on disk
            self._spool(self._drain(len(self._buf)), reason="shutdown")
        self.spool.sync()
        self.spool.close()  # a late event reopens it (see enqueue)
        self._close_conn()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the buffer and the spool are empty (for tests and shutdown paths)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._idle.clear()
            self._wake.set()
            if (
                not self._buf
                and not self.spool.has_pending()
                and not self._agents
                and not self._scores
            ):
                return True
            self._idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        return False

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stop.is_set()
            t0 = time.thread_time()
            try:
                self._cycle()
            except Exception:  # the thread must survive anything; the error is counted
                log.exception("writer cycle failed")
                self.stats.last_error = "writer cycle failed (see log)"
            self.stats.cpu_seconds += time.thread_time() - t0
            self._idle.set()
            if stopping:
                if self._buf:
                    self._spool(self._drain(len(self._buf)), reason="shutdown, database away")
                return

    def _cycle(self) -> None:
        conn = self._connection()
        if conn is None:
            # Database away: keep memory bounded by moving full batches to disk; a partial
            # batch stays buffered a little longer in case the database comes back.
            while len(self._buf) >= self.batch_size:
                self._spool(self._drain(self.max_batch), reason="database unreachable")
            if self._stop.is_set() and self._buf:
                self._spool(self._drain(len(self._buf)), reason="database unreachable")
            return
        self._maintain(conn)
        if self.spool.has_pending() and not self._replay(conn):
            while len(self._buf) >= self.batch_size:
                self._spool(self._drain(self.max_batch), reason="replay pending")
            return
        self._write_agents(conn)
        self._write_scores(conn)
        while self._buf:
            batch = self._drain(self.max_batch)
            if not self._write(conn, batch):
                return
            if len(self._buf) < self.batch_size and not self._stop.is_set():
                break  # the rest waits for the next tick or for 100 events
        if self._stop.is_set():
            self.spool.sync()

    def _drain(self, n: int) -> list[Event]:
        buf = self._buf
        return [buf.popleft() for _ in range(min(n, len(buf)))]

    # -- database -----------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[tuple[object, ...]] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        now = time.monotonic()
        if now < self._next_retry:
            return None
        try:
            conn = psycopg.connect(
                self.conninfo,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name="govrix-writer",
            )
            set_json_dumps(_json_dumps, conn)
            conn.execute(_CREATE_STAGE)
            conn.commit()
        except psycopg.Error as e:
            self._next_retry = now + self.reconnect_delay
            self._note_error(f"connect failed: {e}")
            return None
        if self.stats.batches or self.stats.failed_batches:
            self.stats.reconnects += 1
            log.info("writer reconnected to PostgreSQL")
        self._conn = conn
        self._partitions_ok.clear()
        self._next_maintenance = 0.0
        return conn

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _lost(self, e: BaseException) -> None:
        self._note_error(f"connection lost: {e}")
        self._close_conn()
        self._next_retry = time.monotonic() + self.reconnect_delay

    def _note_error(self, msg: str) -> None:
        if msg != self.stats.last_error:
            log.warning("writer: %s", msg)
        self.stats.last_error = msg

    def _maintain(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Partitions for yesterday..+7 days, and retention, at start and hourly."""
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + 3600
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT govrix_ensure_partitions("
                    "(now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7)"
                )
                if self.retention_days is not None:
                    dropped = conn.execute(
                        "SELECT govrix_drop_partitions_older_than(%s)", (self.retention_days,)
                    ).fetchall()
                    if dropped:
                        log.info("retention dropped partitions: %s", [r[0] for r in dropped])
        except psycopg.OperationalError as e:
            self._lost(e)
        except psycopg.Error as e:
            log.error("partition maintenance failed: %s", e)

    def _ensure_partitions_for(
        self, conn: psycopg.Connection[tuple[object, ...]], batch: Iterable[Event]
    ) -> None:
        days = {ev.timestamp.astimezone(UTC).date() for ev in batch}
        missing = days - self._partitions_ok
        if not missing:
            return
        with conn.transaction():
            conn.execute("SELECT govrix_ensure_partitions(%s, %s)", (min(missing), max(missing)))
        self._partitions_ok.update(missing)

    def _copy(
        self, cur: psycopg.Cursor[tuple[object, ...]], statement: str, batch: list[Event]
    ) -> None:
        astuple = msgspec.structs.astuple
        with cur.copy(statement) as copy:
            copy.set_types(PG_TYPES)
            for ev in batch:
                copy.write_row(astuple(ev))

    def _write(self, conn: psycopg.Connection[tuple[object, ...]], batch: list[Event]) -> bool:
        """COPY one batch straight into ``events``. False when the connection is gone."""
        try:
            for attempt in (1, 2):
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        self._copy(cur, _COPY_EVENTS, batch)
                        self._after_insert(cur, batch)
                    break
                except pgerrors.CheckViolation as e:
                    # "no partition of relation events found for row": create it, try once more.
                    if attempt == 2 or "partition" not in str(e):
                        raise
                    self._partitions_ok.clear()
                    self._ensure_partitions_for(conn, batch)
        except psycopg.OperationalError as e:
            self.stats.failed_batches += 1
            self._lost(e)
            self._spool(batch, reason="batch outcome unknown (connection lost)")
            return False
        except (psycopg.Error, ValueError) as e:
            # Content problem (duplicate id, bad value, text the driver cannot encode): settle it
            # row by row, idempotently.
            self.stats.failed_batches += 1
            if isinstance(e, pgerrors.UniqueViolation):
                log.info("batch of %d holds events stored already (a resend); merging", len(batch))
            else:
                log.warning("batch of %d rejected (%s); retrying row by row", len(batch), e)
            return self._replay_batch(conn, batch, replay=False)
        self.stats.batches += 1
        self.stats.written += len(batch)
        self._committed(batch)
        return True

    def _after_insert(self, cur: psycopg.Cursor[tuple[object, ...]], batch: list[Event]) -> None:
        heads: dict[str, list[object]] = {}
        for ev in batch:
            h = heads.get(ev.session_id)
            if h is None:
                heads[ev.session_id] = [
                    ev.agent_id,
                    ev.timestamp,
                    ev.timestamp,
                    1,
                    ev.seq,
                    ev.lineage_hash,
                ]
                continue
            h[3] = int(h[3]) + 1  # type: ignore[call-overload]
            if ev.timestamp < h[1]:  # type: ignore[operator]
                h[1] = ev.timestamp
            if ev.timestamp > h[2]:  # type: ignore[operator]
                h[2] = ev.timestamp
            if ev.seq > h[4]:  # type: ignore[operator]
                h[4], h[5] = ev.seq, ev.lineage_hash
        cols: list[list[object]] = [list(c) for c in zip(*heads.values(), strict=True)]
        max_id = max(ev.id for ev in batch)
        cur.execute(_UPSERT_SESSIONS, (list(heads), *cols, max_id))

    def _replay(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        """Replay spool records in order. False when the connection broke on the way."""
        for end, batch in self.spool.records():
            if not self._replay_batch(conn, batch, replay=True):
                return False
            self.spool.commit(end)
        return True

    def _replay_batch(
        self, conn: psycopg.Connection[tuple[object, ...]], batch: list[Event], *, replay: bool
    ) -> bool:
        """Insert through the staging table, skipping rows already present (idempotent)."""
        try:
            self._ensure_partitions_for(conn, batch)
            inserted = self._stage_merge(conn, batch)
        except psycopg.OperationalError as e:
            self._lost(e)
            if not replay:
                self._spool(batch, reason="batch outcome unknown (connection lost)")
            return False
        except (psycopg.Error, ValueError) as e:
            log.warning("batch of %d rejected as a whole (%s); settling row by row", len(batch), e)
            inserted = 0
            refused = 0
            lost: set[str] = set()
            for ev in batch:
                try:
                    inserted += self._settle_row(conn, ev)
                except psycopg.OperationalError as e2:
                    self._lost(e2)
                    if not replay:
                        self._spool(batch, reason="connection lost while settling")
                    return False
                except (psycopg.Error, ValueError) as e2:
                    if not self._deadletter(ev, str(e2)):
                        lost.add(ev.id)
                    refused += 1
        else:
            refused = 0
            lost = set()
        if replay:
            self.stats.replayed += inserted
        else:
            self.stats.written += inserted
        # rows of a batch that had committed before its connection broke, or sent again by the
        # proxy after a recorder died: not written twice
        self.stats.already_present += len(batch) - inserted - refused
        self.stats.batches += 1
        self._committed(batch, lost)
        return True

    def _settle_row(self, conn: psycopg.Connection[tuple[object, ...]], ev: Event) -> int:
        """One row on its own; text PostgreSQL cannot store is escaped, never dead-lettered.

        The recorder sanitises every event before it is chained (addon/sanitize.py), so this only
        meets one that was not (a spool written by an older version): it is stored escaped and
        flagged in ``sanitized``, and its lineage hash, taken over the raw text, shows the change.
        """
        try:
            return self._stage_merge(conn, [ev])
        except (psycopg.DataError, ValueError):
            fixed = sanitized_copy(ev)
            if fixed is None:
                raise
            log.warning("event %s: text escaped to be storable after it was chained", ev.id)
            return self._stage_merge(conn, [fixed])

    def _stage_merge(self, conn: psycopg.Connection[tuple[object, ...]], batch: list[Event]) -> int:
        with conn.transaction(), conn.cursor() as cur:
            self._copy(cur, _COPY_STAGE, batch)
            rows = cur.execute(_MERGE_STAGE).fetchall()
            ids = {r[0] for r in rows}
            fresh = [ev for ev in batch if ev.id in ids]
            if fresh:
                self._after_insert(cur, fresh)
        return len(fresh)

    def _write_agents(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        if not self._agents:
            return
        with self._agents_lock:
            agents, self._agents = list(self._agents.values()), {}
        try:
            with conn.transaction():
                conn.execute(
                    _UPSERT_AGENTS,
                    (
                        [a.id for a in agents],
                        [a.name for a in agents],
                        [a.source_ip for a in agents],
                        [a.identity_kind for a in agents],
                        [a.last_seen_at for a in agents],
                    ),
                )
        except psycopg.Error as e:
            with self._agents_lock:
                for a in agents:
                    self._agents.setdefault(a.id, a)
            if isinstance(e, psycopg.OperationalError):
                self._lost(e)
            else:
                log.error("agent registration failed: %s", e)

    def _write_scores(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        if not self._scores:
            return
        rows = [self._scores.popleft() for _ in range(min(1000, len(self._scores)))]
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT_ACTIONS, [r.action for r in rows])
                cur.executemany(_INSERT_SCORES, [r.score for r in rows])
            self.stats.scores_written += len(rows)
        except psycopg.Error as e:
            if isinstance(e, psycopg.OperationalError):
                self._scores.extendleft(reversed(rows))  # keep them for the next connection
                self._lost(e)
            else:
                self.stats.scores_dropped += len(rows)
                log.error("inline scores rejected by PostgreSQL (%d dropped): %s", len(rows), e)

    # -- spool / dead letter ------------------------------------------------------------------

    def _spool(self, batch: list[Event], *, reason: str) -> None:
        if not batch:
            return
        try:
            self.spool.append(batch)
        except SpoolError as e:
            self.stats.dropped += len(batch)
            log.critical("DROPPED %d events: %s (%s)", len(batch), e, reason)
            return
        self.stats.spooled += len(batch)
        log.debug("spooled %d events: %s", len(batch), reason)
        self._durable(batch)

    def _deadletter(self, ev: Event, why: str) -> bool:
        """Keep a row PostgreSQL refused in the dead-letter file; False when that failed too."""
        self.stats.rejected += 1
        log.error(
            "event %s rejected by PostgreSQL: %s (kept in %s)", ev.id, why, self.deadletter_path
        )
        try:
            with open(self.deadletter_path, "ab") as f:
                entry = {"error": why, "event": sanitized_copy(ev) or ev}  # a surrogate: no JSON
                f.write(msgspec.json.encode(entry) + b"\n")
        except OSError as e:
            self.stats.dropped += 1
            log.critical("DROPPED event %s: dead letter write failed: %s", ev.id, e)
            return False
        return True

    def _committed(self, batch: list[Event], lost: set[str] | frozenset[str] = frozenset()) -> None:
        if self.on_commit is not None:
            try:
                self.on_commit(batch)
            except Exception:
                log.exception("on_commit callback failed")
        self._durable([ev for ev in batch if ev.id not in lost] if lost else batch)

    def _durable(self, batch: list[Event]) -> None:
        if self.on_durable is not None and batch:
            try:
                self.on_durable([ev.id for ev in batch])
            except Exception:
                log.exception("on_durable callback failed")


__all__ = ["AgentSighting", "BatchWriter", "ScoreRow", "WriterStats"]
