"""A table mirrored in memory: one thread, one LISTEN connection, a refresh on every change.

State the hot path reads (agents, budgets, policies) lives in memory and is kept in step with
PostgreSQL by a background thread, because a hook may do no database I/O (DESIGN.md §4). The
thread's job is always the same and this module does it once:

- one autocommit connection that ``LISTEN``\\ s on a channel; the caller's ``refresh(conn)`` runs
  when it connects (a change may have been announced while it was away), when notifications
  arrive (a burst is one refresh: the refresh re-reads, it does not replay payloads), every
  ``interval`` seconds as a safety net for a lost notification, and when ``due()`` says so (a
  local change that must reach the database, checked at every ``poll``);
- any error drops the connection and a new one is made after ``reconnect_delay``; a database
  error is logged once per distinct message, a bug of ours with its traceback, and neither ends
  the thread (it is enforcement's only refresher).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["Listener", "ListenerStats"]

Refresh = Callable[["psycopg.Connection[Any]"], None]


@dataclass
class ListenerStats:
    connects: int = 0
    refreshes: int = 0
    notifications: int = 0
    errors: int = 0
    last_error: str | None = None


class Listener:
    """The thread (named ``name``) that keeps one in-memory copy fresh from ``channel``."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        refresh: Refresh,
        *,
        name: str,
        interval: float,
        due: Callable[[], bool] | None = None,
        poll: float = 0.5,
        reconnect_delay: float = 1.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.refresh = refresh
        self.name = name
        self.interval = interval
        self.due = due
        self.poll = poll
        self.reconnect_delay = reconnect_delay
        self.log = logger or logging.getLogger(f"govrix.{name}")
        self.stats = ListenerStats()
        #: True while connected and refreshed at least once on this connection.
        self.live = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def start(self) -> Listener:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._drop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
                self._refresh(conn)
                self.live = True
                self._listen(conn)
            except psycopg.Error as e:
                self._error(f"{self.name} listener: {e}")
            except Exception:  # a bug of ours must not end the only refresher
                self.log.exception("%s listener pass failed", self.name)
                self._error(f"{self.name} listener: internal error")
            self.live = False
            self._drop()
            self._stop.wait(self.reconnect_delay)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        next_full = time.monotonic() + self.interval
        while not self._stop.is_set():
            timeout = max(0.0, min(self.poll, next_full - time.monotonic()))
            notified = False
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                notified = True
            if notified:
                # Take whatever else is already queued too: one refresh covers the burst.
                count = 1 + sum(1 for _ in conn.notifies(timeout=0))
                self.stats.notifications += count
            now = time.monotonic()
            if notified or now >= next_full or (self.due is not None and self.due()):
                self._refresh(conn)
                next_full = time.monotonic() + self.interval

    def _refresh(self, conn: psycopg.Connection[Any]) -> None:
        self.refresh(conn)
        self.stats.refreshes += 1
        if self.stats.last_error is not None:
            self.log.info("%s listener connected again", self.name)
            self.stats.last_error = None

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name=f"govrix-{self.name}",
        )
        self._conn = conn
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self.stats.connects += 1
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _error(self, msg: str) -> None:
        self.stats.errors += 1
        if msg != self.stats.last_error:
            self.log.warning("%s (retrying every %.1fs)", msg, self.reconnect_delay)
        self.stats.last_error = msg
