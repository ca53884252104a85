"""Budgets shared through PostgreSQL: one background thread keeps this proxy's state in step.

- Limits: the ``budgets`` table, applied the moment a row changes (``LISTEN govrix_budgets``) and
  re-read every ``reload_interval`` seconds as a safety net.
- Usage, every ``sync_interval`` seconds, in one transaction: what this proxy settled is added to
  ``budget_usage``; its reservations are published in ``budget_reservations`` (the others ignore
  rows older than ``RESERVATION_TTL``, so a crashed instance holds nothing); every instance's
  totals are read back.

The state itself is ``ledger.py``'s; this thread only hands it what the database says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from .specs import BudgetSpec, Key

if TYPE_CHECKING:
    from .ledger import Budgets

log = logging.getLogger("govrix.budgets")

#: Another instance's published reservations count for this long after its last sync.
RESERVATION_TTL = 10.0
#: How often the background thread wakes to notice ``stop()`` while waiting for notifications.
_POLL = 0.5


class BudgetSync:
    """The thread (``govrix-budgets``) and its one connection, for one :class:`Budgets`."""

    def __init__(
        self,
        budgets: Budgets,
        conninfo: str,
        *,
        instance: str | None,
        sync_interval: float,
        reload_interval: float,
    ) -> None:
        self.budgets = budgets
        self.conninfo = conninfo
        self.sync_interval = sync_interval
        self.reload_interval = reload_interval
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # What this instance last wrote to budget_reservations, and when (monotonic).
        self._published: dict[Key, tuple[int, int]] = {}
        self._published_at = 0.0
        self._swept_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._reload_now = True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="govrix-budgets", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._sync_once_safely(final=True)  # the last settled usage goes to the database
        self._drop()

    def _run(self) -> None:
        next_reload = next_sync = 0.0
        while not self._stop.is_set():
            try:
                conn = self._connect()
                now = time.monotonic()
                if self._reload_now or now >= next_reload:
                    self._reload_now = False
                    self._reload_specs(conn)
                    next_reload = time.monotonic() + self.reload_interval
                if now >= next_sync:
                    self._sync_once(conn)
                    next_sync = time.monotonic() + self.sync_interval
                timeout = min(next_sync, next_reload, time.monotonic() + _POLL) - time.monotonic()
                for note in conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                    del note
                    self.budgets.stats.notifications += 1
                    self._reload_now = True
            except psycopg.Error as e:
                self._drop()
                self._error(f"budget sync failed: {e}")
                self._stop.wait(min(self.sync_interval, 1.0))
            except Exception:  # a bug of ours must not end enforcement's only refresher
                log.exception("budget thread pass failed")
                self._drop()
                self._stop.wait(min(self.sync_interval, 1.0))

    def _error(self, msg: str) -> None:
        if msg != self.budgets.stats.last_error:
            log.warning(msg)
        self.budgets.stats.last_error = msg
        self.budgets.stats.sync_errors += 1

    def _connect(self) -> psycopg.Connection[Any]:
        """One autocommit connection kept across syncs (a new one each second would cost an
        authentication handshake each time); it also listens on ``govrix_budgets``. Dropped on any
        error and made again at the next pass, which re-reads the specs (a change may have been
        announced while it was away)."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=5,
                application_name="govrix-budgets",
            )
            self._conn.execute("LISTEN govrix_budgets")
            self._reload_now = True
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            yield self._connect()
        except psycopg.Error:
            self._drop()
            raise

    def _reload_specs(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT id, agent_id, period, metric, limit_value FROM budgets WHERE enabled"
        ).fetchall()
        self.budgets.set_specs(
            BudgetSpec(id=r[0], agent_id=r[1], period=r[2], metric=r[3], limit=float(r[4]))
            for r in rows
        )
        self.budgets.stats.reloads += 1

    def _sync_once_safely(self, *, final: bool = False) -> None:
        try:
            with self._connection() as conn:
                self._sync_once(conn, final=final)
        except psycopg.Error as e:
            self._error(f"budget usage sync failed: {e}")

    def _sync_once(self, conn: psycopg.Connection[Any], *, final: bool = False) -> None:
        """Add settled deltas to ``budget_usage``, publish this instance's reservations, read
        every instance's totals back: one transaction."""
        deltas, mine = self.budgets.take_settled(final=final)
        gone = self._published.keys() - mine.keys()
        now = time.monotonic()
        # Unchanged rows are rewritten only to stay fresh for the others (RESERVATION_TTL).
        refresh = now - self._published_at > RESERVATION_TTL / 3
        changed = {k: v for k, v in mine.items() if refresh or self._published.get(k) != v}
        sweep = now - self._swept_at > 60
        today = datetime.now(UTC).date()
        try:
            with conn.transaction():
                cur = conn.cursor()
                if deltas:
                    cur.executemany(
                        "INSERT INTO budget_usage "
                        "(usage_key, period, period_start, tokens, usd_micros) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (usage_key, period, period_start) "
                        "DO UPDATE SET tokens = budget_usage.tokens + EXCLUDED.tokens, "
                        "usd_micros = budget_usage.usd_micros + EXCLUDED.usd_micros, "
                        "updated_at = now()",
                        [(k[0], k[1], k[2], v[0], v[1]) for k, v in deltas.items()],
                    )
                if changed:
                    cur.executemany(
                        "INSERT INTO budget_reservations "
                        "(instance, usage_key, period, period_start, tokens, usd_micros) "
                        "VALUES (%s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (instance, usage_key, period, period_start) DO UPDATE SET "
                        "tokens = EXCLUDED.tokens, usd_micros = EXCLUDED.usd_micros, "
                        "updated_at = now()",
                        [(self.instance, k[0], k[1], k[2], v[0], v[1]) for k, v in changed.items()],
                    )
                if gone:
                    cur.executemany(
                        "DELETE FROM budget_reservations WHERE instance = %s AND usage_key = %s "
                        "AND period = %s AND period_start = %s",
                        [(self.instance, *k) for k in gone],
                    )
                if sweep:  # rows of instances that stopped without saying so
                    cur.execute(
                        "DELETE FROM budget_reservations WHERE updated_at < now() - interval '1 hour'"
                    )
                rows = conn.execute(
                    "SELECT usage_key, period, period_start, tokens, usd_micros FROM budget_usage "
                    "WHERE (period = 'daily' AND period_start = %s) "
                    "   OR (period = 'monthly' AND period_start = %s)",
                    (today, today.replace(day=1)),
                ).fetchall()
                others = conn.execute(
                    "SELECT usage_key, period, period_start, sum(tokens), sum(usd_micros) "
                    "FROM budget_reservations WHERE instance <> %s "
                    "AND updated_at > now() - make_interval(secs => %s) "
                    "GROUP BY usage_key, period, period_start",
                    (self.instance, RESERVATION_TTL),
                ).fetchall()
        except psycopg.Error:
            self.budgets.unsent()  # not written: kept for the next try
            raise
        self._published = mine
        if refresh:
            self._published_at = now
        if sweep:
            self._swept_at = now
        self.budgets.synced(rows, others)
        self.budgets.stats.syncs += 1
