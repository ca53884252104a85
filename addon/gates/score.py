"""An MCP ``tools/call`` scored inline, so that policies can block on ``risk_level`` and on what
the score read (``provenance``, ``destination``).

Never a refusal by itself; the verdict goes on the call (and, through a ``Score`` capture, into
the ``actions``/``scores`` tables).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from mitmproxy import http

from addon.call import Call
from addon.mcp import InlineScorer, parse_tools_call, score_row
from addon.refusals import Refusal
from addon.route import MCP_CALL
from addon.wire import Score


class ScoreMcp:
    name = "score"

    def __init__(
        self,
        scorer: InlineScorer,
        servers: dict[str, str],
        customer_id: str,
        send: Callable[[Score], None],
    ) -> None:
        self.scorer = scorer
        self.servers = servers
        self.customer_id = customer_id
        self.send = send

    def __call__(self, call: Call, flow: http.HTTPFlow) -> Refusal | None:
        if call.route.kind != MCP_CALL or call.body is None:
            return None
        mcp_call = parse_tools_call(call.body)
        if mcp_call is None:
            return None
        call.tool_name, call.rpc_id = mcp_call.tool, mcp_call.rpc_id
        route = call.route
        name = self.servers.get(f"{route.host}:{route.port}") or self.servers.get(route.host)
        event, result, facts = self.scorer.score_mcp(
            event_id=call.request_id,
            agent_id=call.identity.agent_id,
            session_id=call.session_id,
            server=name or route.host,
            verified=name is not None,
            call=mcp_call,
            timestamp=datetime.fromtimestamp(call.started, UTC),
        )
        call.risk = result
        call.risk_facts = facts
        row = score_row(self.customer_id, event, result)
        self.send(Score(call.identity.agent_id, event.action, list(row.action), list(row.score)))
        return None
