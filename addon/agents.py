"""The in-memory agent table behind the kill switch: zero database round trips per request.

Loaded at start, updated through ``LISTEN govrix_agents`` the moment a row changes (the trigger in
sql/002), and fully re-read every 30 s as a safety net. A background thread owns the listening
connection and reconnects by itself; hooks only do a dict lookup.

What happens while the table is not live (before the first load, or while the database is away)
is the ``fail_mode`` setting:

- ``last_known`` (default): the last known table applies; agents it does not know are allowed.
- ``fail_open``: everything is allowed until the table is live again (availability first).
- ``fail_closed``: before the first load every request is refused; afterwards the last known
  table applies and agents it does not know are refused (503 ``governance_unavailable``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import psycopg

log = logging.getLogger("govrix.agents")

ALLOW = "allow"
BLOCKED = "blocked"
RETIRED = "retired"
UNAVAILABLE = "unavailable"


@dataclass
class AgentTableStats:
    full_loads: int = 0
    notifications: int = 0
    reconnects: int = 0
    last_error: str | None = None


class AgentTable:
    """Agent id -> status, kept fresh from PostgreSQL by one background thread."""

    def __init__(
        self,
        conninfo: str | None,
        *,
        fail_mode: str = "last_known",
        refresh_interval: float = 30.0,
        reconnect_delay: float = 1.0,
    ) -> None:
        self.conninfo = conninfo
        self.fail_mode = fail_mode
        self.refresh_interval = refresh_interval
        self.reconnect_delay = reconnect_delay
        self._status: dict[str, str] = {}
        self.loaded = False
        self.live = False
        self.stats = AgentTableStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    # -- the hot path ---------------------------------------------------------------------------

    def decide(self, agent_id: str) -> str:
        """ALLOW, BLOCKED, RETIRED or UNAVAILABLE for one request: a dict lookup, no I/O."""
        status = self._status.get(agent_id)
        if status in (BLOCKED, RETIRED):
            if self.fail_mode == "fail_open" and not self.live:
                return ALLOW
            return status
        if status is None and self.fail_mode == "fail_closed" and not self.live:
            return UNAVAILABLE
        if not self.loaded and self.fail_mode == "fail_closed":
            return UNAVAILABLE
        return ALLOW

    def known(self, agent_id: str) -> bool:
        return agent_id in self._status

    def set_local(self, agent_id: str, status: str) -> None:
        """Record a status learned locally (e.g. a freshly registered agent is active)."""
        self._status.setdefault(agent_id, status)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> AgentTable:
        if self.conninfo and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="govrix-agents", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_loaded(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.loaded:
            time.sleep(0.01)
        return self.loaded

    # -- the listener thread --------------------------------------------------------------------

    def _run(self) -> None:
        assert self.conninfo is not None
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    application_name="govrix-agents",
                    connect_timeout=5,
                ) as conn:
                    conn.execute("LISTEN govrix_agents")
                    self._full_load(conn)
                    if not first:
                        self.stats.reconnects += 1
                        log.info("agent table listener reconnected")
                    first = False
                    self.live = True
                    self._listen(conn)
            except psycopg.Error as e:
                msg = f"agent table listener: {e}"
                if msg != self.stats.last_error:
                    log.warning("%s (retrying every %.1fs)", msg, self.reconnect_delay)
                self.stats.last_error = msg
            finally:
                self.live = False
            self._stop.wait(self.reconnect_delay)

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        next_full = time.monotonic() + self.refresh_interval
        while not self._stop.is_set():
            for note in conn.notifies(timeout=0.5):
                self._apply(note.payload)
            if time.monotonic() >= next_full:
                self._full_load(conn)
                next_full = time.monotonic() + self.refresh_interval

    def _full_load(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        rows = conn.execute("SELECT id, status FROM agents").fetchall()
        self._status = {str(r[0]): str(r[1]) for r in rows}  # one atomic swap
        self.loaded = True
        self.stats.full_loads += 1

    def _apply(self, payload: str) -> None:
        self.stats.notifications += 1
        try:
            msg = json.loads(payload)
            agent_id, status, op = msg["id"], msg.get("status"), msg.get("op")
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed govrix_agents payload")
            return
        if op == "DELETE":
            self._status.pop(agent_id, None)
        elif isinstance(status, str):
            self._status[agent_id] = status
