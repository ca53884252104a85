"""``BatchWriter``: the bounded buffer, the writer thread and its connection, the COPY of a batch.

The package docstring (``addon/writer/__init__.py``) tells the whole story. This module is the
conductor: it decides what happens to each batch (COPY, merge through the staging table, spool)
and keeps the books of every event's outcome (``stats``, ``on_commit``, ``on_durable``); the SQL
of each part lives beside it (``rows.py``, ``staging.py``, ``partitions.py``, ``agents.py``,
``scores.py``). A lost connection is handled here only (``_lost``): the parts raise
``psycopg.OperationalError`` to it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import errors as pgerrors
from psycopg.types.json import set_json_dumps

from addon.event import Event
from addon.spool import Spool, SpoolError
from addon.writer import staging
from addon.writer.agents import AgentSighting, Sightings
from addon.writer.partitions import Partitions
from addon.writer.rows import COPY_EVENTS, copy_rows, json_dumps, upsert_sessions
from addon.writer.scores import PendingScores, ScoreRow
from addon.writer.stats import WriterStats

log = logging.getLogger("govrix.writer")


class BatchWriter:
    """Bounded buffer + background COPY thread + spool. See the package docstring."""

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
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self.on_commit = on_commit
        #: Called (from the writer thread, or from ``enqueue``'s caller when it spools) with the
        #: ids of events now committed, spooled or dead-lettered; again when spooled ones replay.
        self.on_durable = on_durable
        self.spool = Spool(spool_dir / "events.spool")
        self._buf: collections.deque[Event] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        #: True while a cycle runs: what it drained is neither waiting nor committed yet.
        self._busy = False
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._next_retry = 0.0
        self.stats = WriterStats(
            depth=self._buf.__len__, spool_bytes=lambda: self.spool.pending_bytes
        )
        self.deadletter = staging.DeadLetter(spool_dir / "deadletter.jsonl", self.stats)
        self.partitions = Partitions(retention_days)
        self._agents = Sightings()
        self._scores = PendingScores(self.stats)

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
        if not self._buf:
            self.stats.waiting_since = time.monotonic()
        self._buf.append(ev)
        if len(self._buf) >= self.batch_size:
            self._wake.set()

    def sight_agent(self, agent: AgentSighting) -> None:
        """Register (or refresh ``last_seen_at`` of) an agent at the next flush."""
        self._agents.add(agent)
        self._wake.set()

    def record_score(self, row: ScoreRow) -> None:
        """Store an inline score at the next flush (bounded; overflow is counted and logged)."""
        self._scores.add(row)

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
        """Wait until the buffer and the spool are empty and what a cycle took from them is
        settled (for tests and shutdown paths)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._idle.clear()
            self._wake.set()
            if (
                not self._busy
                and not self._buf
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
            self._busy = True
            try:
                self._cycle()
            except Exception:  # the thread must survive anything; the error is counted
                log.exception("writer cycle failed")
                self.stats.last_error = "writer cycle failed (see log)"
            finally:
                self._busy = False
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

    # -- the connection -----------------------------------------------------------------------

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
            set_json_dumps(json_dumps, conn)
            conn.execute(staging.CREATE_STAGE)
            conn.commit()
        except psycopg.Error as e:
            self._next_retry = now + self.reconnect_delay
            self._note_error(f"connect failed: {e}")
            return None
        if self.stats.batches or self.stats.failed_batches:
            self.stats.reconnects += 1
            log.info("writer reconnected to PostgreSQL")
        self._conn = conn
        self.partitions.reset()
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

    # -- what each flush writes ---------------------------------------------------------------

    def _maintain(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        try:
            self.partitions.maintain(conn)
        except psycopg.OperationalError as e:
            self._lost(e)

    def _write_agents(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        try:
            self._agents.write(conn)
        except psycopg.OperationalError as e:
            self._lost(e)

    def _write_scores(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        try:
            self._scores.write(conn)
        except psycopg.OperationalError as e:
            self._lost(e)

    def _write(self, conn: psycopg.Connection[tuple[object, ...]], batch: list[Event]) -> bool:
        """COPY one batch straight into ``events``. False when the connection is gone."""
        try:
            for attempt in (1, 2):
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        copy_rows(cur, COPY_EVENTS, batch)
                        upsert_sessions(cur, batch)
                    break
                except pgerrors.CheckViolation as e:
                    # "no partition of relation events found for row": create it, try once more.
                    if attempt == 2 or "partition" not in str(e):
                        raise
                    self.partitions.forget()
                    self.partitions.ensure_for(conn, batch)
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
            return self._merge(conn, batch, replay=False)
        self.stats.batches += 1
        self.stats.written += len(batch)
        self._committed(batch)
        return True

    def _replay(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        """Replay spool records in order. False when the connection broke on the way."""
        for end, batch in self.spool.records():
            if not self._merge(conn, batch, replay=True):
                return False
            self.spool.commit(end)
        return True

    def _merge(
        self, conn: psycopg.Connection[tuple[object, ...]], batch: list[Event], *, replay: bool
    ) -> bool:
        """Insert through the staging table, skipping rows already present (idempotent).

        ``replay``: the batch comes from the spool (counted as replayed, and left there when the
        connection breaks); else from the buffer (counted as written, spooled when it breaks)."""
        try:
            self.partitions.ensure_for(conn, batch)
            inserted = staging.stage_merge(conn, batch)
        except psycopg.OperationalError as e:
            self._lost(e)
            if not replay:
                self._spool(batch, reason="batch outcome unknown (connection lost)")
            return False
        except (psycopg.Error, ValueError) as e:
            log.warning("batch of %d rejected as a whole (%s); settling row by row", len(batch), e)
            try:
                inserted, refused, lost = staging.settle_rows(conn, batch, self.deadletter)
            except psycopg.OperationalError as e2:
                self._lost(e2)
                if not replay:
                    self._spool(batch, reason="connection lost while settling")
                return False
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

    # -- outcomes: spooled, committed, durable ------------------------------------------------

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

    def _committed(self, batch: list[Event], lost: set[str] | frozenset[str] = frozenset()) -> None:
        if self.on_commit is not None:
            try:
                self.on_commit(batch)
            except Exception:
                log.exception("on_commit callback failed")
        self._durable([ev for ev in batch if ev.id not in lost] if lost else batch)

    def _durable(self, batch: list[Event]) -> None:
        # Progress: what still waits has waited since now (``lag`` measures stalls).
        self.stats.waiting_since = time.monotonic() if self._buf else None
        if self.on_durable is not None and batch:
            try:
                self.on_durable([ev.id for ev in batch])
            except Exception:
                log.exception("on_durable callback failed")
