"""The kill switch: the agent's status in the in-memory table decides, nothing else.

No body, no host, no method is read: a blocked agent is refused on every host it reaches through
the proxy (CONNECT included, when the tunnel names the agent), so it cannot exfiltrate through a
host we do not parse. A dict lookup; zero database round trips.
"""

from __future__ import annotations

from addon import refusals
from addon.agents import ALLOW, BLOCKED, RETIRED, AgentTable
from addon.identity import Identity
from addon.refusals import Refusal


class KillSwitch:
    name = "kill_switch"

    def __init__(self, agents: AgentTable) -> None:
        self.agents = agents

    def check(self, identity: Identity) -> Refusal | None:
        verdict = self.agents.decide(identity.agent_id)
        if verdict == ALLOW:
            return None
        if verdict == BLOCKED:
            return refusals.agent_blocked(identity.name)
        if verdict == RETIRED:
            return refusals.agent_retired(identity.name)
        return refusals.governance_unavailable()
