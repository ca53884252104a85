"""Scoring of the tool calls a model asked for in its response (``tool:<name>:call``).

Each is scored by the inline scorer (``addon/mcp.py``) into an ``actions`` + ``scores`` row for
the writer; the response event keeps its name, id, the size of its arguments and the score's
summary, never the arguments themselves. The request's messages, indexed once by trust
(``addon/trust.py``), give every call of the response its provenance facts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from addon import metrics
from addon.mcp import InlineScorer, score_row, summary
from addon.providers import RequestInfo, ResponseInfo
from addon.trust import conversation_of
from addon.wire import Begin
from addon.writer import ScoreRow

log = logging.getLogger("govrix.recorder")


def score_tool_calls(
    scorer: InlineScorer | None,
    b: Begin,
    rinfo: ResponseInfo,
    response_event_id: str,
    *,
    customer_id: str,
    record_score: Callable[[ScoreRow], None],
    request: RequestInfo | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The response event's ``tool_calls`` entries, and the actions scored (for the history);
    `request`: what the request that produced them said (its messages, for provenance)."""
    out: list[dict[str, Any]] = []
    actions: list[str] = []
    conversation = None
    if scorer is not None and rinfo.tool_calls and request is not None:
        try:
            conversation = conversation_of(request)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "tool_score").inc()
            log.exception("indexing the conversation of a tool call failed")
    for i, tc in enumerate(rinfo.tool_calls):
        entry: dict[str, Any] = {
            "name": tc.name,
            "id": tc.id,
            "arguments_bytes": len(tc.arguments),
        }
        if scorer is not None:
            try:
                event, result = scorer.score_tool_call(
                    event_id=f"{response_event_id}:tool{i}",
                    agent_id=b.agent_id,
                    session_id=b.session_id,
                    name=tc.name,
                    arguments=tc.arguments,
                    timestamp=datetime.now(UTC),
                    conversation=conversation,
                )
                entry |= {"action": event.action} | summary(result)
                actions.append(event.action)
                record_score(score_row(customer_id, event, result))
            except Exception:
                metrics.child(metrics.HOOK_ERRORS, "tool_score").inc()
                log.exception("inline scoring of a tool call failed")
        out.append(entry)
    return out, actions
