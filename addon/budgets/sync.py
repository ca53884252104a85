"""Budgets shared through PostgreSQL: one background thread keeps this proxy's state in step.

- Limits: the ``budgets`` table, applied the moment a row changes (``LISTEN govrix_budgets``) and
  re-read every ``reload_interval`` seconds as a safety net.
- Usage and leases, every ``sync_interval`` seconds, and sooner when the ledger asks (a call
  waits for lease, or a lease fell below its watermark; at most every ``leases.MIN_GAP``
  seconds), in one transaction: an advisory lock per usage key (``pg_advisory_xact_lock``,
  taken in one sorted statement, so two instances never deadlock); what this proxy settled is
  added to ``budget_usage`` and taken off its lease; its lease is topped up or shrunk to what the
  ledger asks, never beyond ``limit - settled - the others' unexpired leases``
  (``leases.grant``), and renewed for ``LEASE_TTL``; its reservations are published in
  ``budget_reservations`` (shown by the API; the others ignore rows older than
  ``RESERVATION_TTL``); every instance's totals and leases are read back.
- A reload of the limits is followed at once by a sync, and both reach the ledger in one step:
  a new budget applies together with its first lease.
- At ``stop()``, a last sync writes the settled usage and returns every lease (rows deleted).

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
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from .leases import LEASE_TTL, MIN_GAP, Ask, grant
from .specs import BudgetSpec, Key

if TYPE_CHECKING:
    from .ledger import Budgets

log = logging.getLogger("govrix.budgets")

#: Another instance's published reservations count for this long after its last sync.
RESERVATION_TTL = 10.0
#: How often the background thread wakes, while waiting for notifications, to notice ``stop()``
#: or a ledger that asks for lease.
_POLL = 0.05
#: ``pg_advisory_xact_lock(_LEASE_LOCK, hashtext(key))`` serialises the grants of one usage key.
_LEASE_LOCK = 0x60F81D  # arbitrary, constant: "govrix budget leases"


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
        self._synced_at = 0.0  # monotonic, the start of the last sync
        self._leased: set[Key] = set()  # keys of this instance's rows in budget_leases
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
                    self._sync_once(conn, specs=self._read_specs(conn))
                    next_reload = time.monotonic() + self.reload_interval
                    next_sync = time.monotonic() + self.sync_interval
                elif now >= next_sync or (self.budgets.nudged and now - self._synced_at >= MIN_GAP):
                    if now < next_sync:
                        self.budgets.stats.nudged_syncs += 1
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

    def _read_specs(self, conn: psycopg.Connection[Any]) -> list[BudgetSpec]:
        rows = conn.execute(
            "SELECT id, agent_id, period, metric, limit_value FROM budgets WHERE enabled"
        ).fetchall()
        self.budgets.stats.reloads += 1
        return [
            BudgetSpec(id=r[0], agent_id=r[1], period=r[2], metric=r[3], limit=float(r[4]))
            for r in rows
        ]

    def _sync_once_safely(self, *, final: bool = False) -> None:
        try:
            with self._connection() as conn:
                self._sync_once(conn, final=final)
        except psycopg.Error as e:
            self._error(f"budget usage sync failed: {e}")

    def _sync_once(
        self,
        conn: psycopg.Connection[Any],
        *,
        final: bool = False,
        specs: list[BudgetSpec] | None = None,
    ) -> None:
        """Add settled deltas to ``budget_usage``, grant or return leases, publish this
        instance's reservations, read every instance's totals back: one transaction."""
        take = self.budgets.take_settled(final=final, specs=specs)
        self._synced_at = take.started
        deltas, mine, asks = take.deltas, take.mine, take.asks
        gone = self._published.keys() - mine.keys()
        now = take.started
        # Unchanged rows are rewritten only to stay fresh for the others (RESERVATION_TTL).
        refresh = now - self._published_at > RESERVATION_TTL / 3
        changed = {k: v for k, v in mine.items() if refresh or self._published.get(k) != v}
        sweep = now - self._swept_at > 60
        today = datetime.now(UTC).date()
        lease_keys = sorted(asks.keys() | self._leased)
        leases: dict[Key, tuple[int, int]] = {}
        try:
            with conn.transaction():
                cur = conn.cursor()
                if lease_keys:
                    # One statement, keys in a fixed order: two instances never wait on each
                    # other in a cycle. (Equal hashes share a lock: that only serialises more.)
                    cur.execute(
                        "SELECT pg_advisory_xact_lock(%s, h) FROM "
                        "(SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) AS k "
                        "ORDER BY h) AS locks",
                        (_LEASE_LOCK, sorted({_lock_name(k) for k in lease_keys})),
                    )
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
                    cur.execute(
                        "DELETE FROM budget_leases WHERE expires_at < now() - interval '1 hour'"
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
                # What each other instance holds: its unexpired lease, or more when a call
                # admitted on its last crumbs of lease holds more (its published reservations).
                others_leased = conn.execute(
                    "SELECT usage_key, period, period_start, "
                    "sum(greatest(l.tokens, r.tokens)), sum(greatest(l.usd_micros, r.usd_micros)) "
                    "FROM (SELECT * FROM budget_leases WHERE instance <> %s "
                    "      AND expires_at > now()) AS l "
                    "FULL JOIN (SELECT * FROM budget_reservations WHERE instance <> %s "
                    "      AND updated_at > now() - make_interval(secs => %s)) AS r "
                    "USING (instance, usage_key, period, period_start) "
                    "GROUP BY usage_key, period, period_start",
                    (self.instance, self.instance, RESERVATION_TTL),
                ).fetchall()
                if lease_keys:
                    leases = self._grant(conn, asks, rows, others_leased, today)
        except psycopg.Error:
            self.budgets.unsent(specs)  # not written: kept for the next try
            raise
        self._published = mine
        self._leased = set(leases)
        if refresh:
            self._published_at = now
        if sweep:
            self._swept_at = now
        self.budgets.synced(
            rows,
            others,
            leases=leases,
            others_leased=others_leased,
            specs=specs,
            started=take.started,
        )
        self.budgets.stats.syncs += 1

    def _grant(
        self,
        conn: psycopg.Connection[Any],
        asks: dict[Key, Ask],
        spent_rows: list[Any],
        others_rows: list[Any],
        today: date,
    ) -> dict[Key, tuple[int, int]]:
        """Inside the sync's transaction, under the keys' locks: the new leases, written."""
        spent = {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in spent_rows}
        others = {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in others_rows}
        live = {
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT usage_key, period, period_start FROM budget_leases "
                "WHERE instance = %s AND expires_at > now()",
                (self.instance,),
            )
        }
        leases: dict[Key, tuple[int, int]] = {}
        for key, ask in asks.items():
            if key[2] == (today if key[1] == "daily" else today.replace(day=1)):
                new = grant(ask, spent.get(key, (0, 0)), others.get(key, (0, 0)), live=key in live)
            else:  # a past period's key: keep what is held for calls still in flight, no more
                new = ask.floor if key in live else (0, 0)
            if any(new):
                leases[key] = new
        cur = conn.cursor()
        if leases:
            cur.executemany(
                "INSERT INTO budget_leases "
                "(instance, usage_key, period, period_start, tokens, usd_micros, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (instance, usage_key, period, period_start) DO UPDATE SET "
                "granted_at = CASE WHEN (budget_leases.tokens, budget_leases.usd_micros) "
                "  IS DISTINCT FROM (EXCLUDED.tokens, EXCLUDED.usd_micros) "
                "  THEN now() ELSE budget_leases.granted_at END, "
                "tokens = EXCLUDED.tokens, usd_micros = EXCLUDED.usd_micros, "
                "expires_at = EXCLUDED.expires_at",
                [
                    (self.instance, k[0], k[1], k[2], v[0], v[1], LEASE_TTL)
                    for k, v in leases.items()
                ],
            )
        returned = (self._leased | live) - leases.keys()
        if returned:
            cur.executemany(
                "DELETE FROM budget_leases WHERE instance = %s AND usage_key = %s "
                "AND period = %s AND period_start = %s",
                [(self.instance, *k) for k in sorted(returned)],
            )
        return leases


def _lock_name(key: Key) -> str:
    return f"{key[0]}|{key[1]}|{key[2].isoformat()}"
