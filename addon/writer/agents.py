"""Agents seen by the proxy, registered (or their ``last_seen_at`` moved) at the next flush.

The upsert never touches an agent's ``status``: that is the operators' (the kill switch,
``addon/agents.py``). Sightings of one agent between two flushes collapse into the last one.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import msgspec
import psycopg

log = logging.getLogger("govrix.writer")

_UPSERT_AGENTS = """
INSERT INTO agents AS a (id, name, source_ip, identity_kind, last_seen_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
    last_seen_at = greatest(a.last_seen_at, EXCLUDED.last_seen_at),
    source_ip    = coalesce(EXCLUDED.source_ip, a.source_ip)
"""


class AgentSighting(msgspec.Struct, gc=False):
    """An agent seen by the proxy: registered on first sight, never changing its status."""

    id: str
    name: str
    source_ip: str | None
    identity_kind: str
    last_seen_at: datetime


class Sightings:
    """Sightings waiting for the next flush, by agent id (any thread may add one)."""

    def __init__(self) -> None:
        self._pending: dict[str, AgentSighting] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, agent: AgentSighting) -> None:
        with self._lock:
            self._pending[agent.id] = agent

    def write(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Upsert what waits. On failure it waits again; ``psycopg.OperationalError`` is raised
        for the writer (the connection broke), other errors are logged."""
        if not self._pending:
            return
        with self._lock:
            agents, self._pending = list(self._pending.values()), {}
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
            with self._lock:
                for a in agents:
                    self._pending.setdefault(a.id, a)
            if isinstance(e, psycopg.OperationalError):
                raise
            log.error("agent registration failed: %s", e)
