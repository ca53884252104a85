"""Agents seen by this proxy: registered on first sight, ``last_seen_at`` refreshed once a minute.

A new agent is ``active`` in the in-memory agent table at once (the kill switch answers for it
from its first call); the row itself is written by the recorder (an ``AgentSeen`` capture), so
no hook waits for the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from addon.agents import AgentTable
from addon.identity import Identity
from addon.wire import AgentSeen

if TYPE_CHECKING:
    from addon.supervisor import Supervisor

#: An agent's ``AgentSeen`` is sent again after this many seconds, not before.
REFRESH_SECONDS = 60


class Sightings:
    """When each agent was last announced (wall clock, the request's ingress)."""

    def __init__(self, agents: AgentTable, recorder: Supervisor | None) -> None:
        self.agents = agents
        self.recorder = recorder
        self._sighted: dict[str, float] = {}

    def sight(self, identity: Identity, now: float) -> None:
        """Register an agent on first sight, and refresh last_seen_at at most once a minute."""
        last = self._sighted.get(identity.agent_id)
        if last is not None and now - last < REFRESH_SECONDS:
            return
        self._sighted[identity.agent_id] = now
        if not self.agents.known(identity.agent_id):
            self.agents.set_local(identity.agent_id, "active")
        if self.recorder is not None:
            self.recorder.send(
                AgentSeen(
                    identity.agent_id,
                    identity.name,
                    identity.source_ip,
                    identity.kind,
                    datetime.fromtimestamp(now, UTC),
                )
            )
