"""Agent actions seen by the proxy, scored inline with the same engine as ``POST /events``.

- MCP over HTTP: a JSON-RPC ``tools/call`` request becomes the action ``mcp:<server>:<tool>``.
- A tool call in an LLM response becomes ``tool:<name>:call``.

History facts come from memory (first use of a server by this agent in this proxy's life, the
agent's recent actions), never from the database: scoring runs in the request hook (p99 well under
a millisecond) and the result can block the call through a policy on ``risk_level``.

Provenance (``api/scoring/provenance.py``): an LLM tool call is scored with the conversation of
the request that produced it; an MCP ``tools/call`` with what the session's earlier tool results
left behind (salted digests of their tokens and an instruction-cue flag, bounded per session,
never the text: :meth:`InlineScorer.observe_tool_result`).
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from addon.providers.base import Provider, RequestInfo, ResponseInfo, Usage
from addon.providers.other import Unpriced
from addon.writer import ScoreRow
from api.scoring import ActionEvent, Engine, HistoryFacts, ScoreResult, convert_action_event
from api.scoring.provenance import Conversation, SessionFlow

_SAFE = re.compile(r"[^\w.\-]+")
_decode_rpc = msgspec.json.Decoder()
_RECENT = 20
_COUNTERPARTIES = 1000  # destinations remembered per agent
_FLOW_SESSIONS = 10_000  # sessions whose tool results are remembered (all forgotten past it)
# What decoding a client's JSON can raise besides DecodeError: invalid UTF-8 inside a string,
# nesting deeper than the decoder's recursion limit. Parsing never raises (DESIGN.md §4).
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class CallFacts(NamedTuple):
    """What a policy may test of a scored call besides its risk level: classes, never values
    (docs/policy.md, "Fields": ``provenance``, ``destination``)."""

    #: Worst origin of the values that steer the call: ``untrusted`` (only a tool returned it),
    #: ``invented`` (found nowhere in the conversation) or ``trusted``; None when it has none.
    provenance: str | None
    #: ``external`` (an outside party) or ``internal``; None when the call names no destination.
    destination: str | None


def call_facts(facts: dict[str, Any]) -> CallFacts:
    provenance = facts.get("provenance")
    destination = facts.get("destination")
    return CallFacts(
        provenance if isinstance(provenance, str) else None,
        destination if isinstance(destination, str) else None,
    )


class McpCall(msgspec.Struct, frozen=True):
    """One ``tools/call`` of a JSON-RPC request."""

    rpc_id: Any
    tool: str
    arguments: dict[str, Any]


def safe_part(value: str, fallback: str = "unknown") -> str:
    """A string usable as one ``domain:scope:verb`` part (no colons, no spaces)."""
    cleaned = _SAFE.sub("_", value.strip()).strip("_.-")
    return cleaned[:120] or fallback


def parse_tools_call(body: bytes) -> McpCall | None:
    """The ``tools/call`` in a JSON-RPC body (a single message, or the first in a batch)."""
    if b"tools/call" not in body:
        return None
    try:
        doc = _decode_rpc.decode(body)
    except _UNDECODABLE:
        return None
    for msg in doc if isinstance(doc, list) else [doc]:
        if isinstance(msg, dict) and msg.get("method") == "tools/call":
            params = msg.get("params") or {}
            if not isinstance(params, dict) or not isinstance(params.get("name"), str):
                return None
            args = params.get("arguments")
            return McpCall(msg.get("id"), params["name"], args if isinstance(args, dict) else {})
    return None


def request_info(call: McpCall) -> RequestInfo:
    """What the rest of the proxy needs: the tool, and the argument strings for the PII scan."""
    from addon.pii import json_segments

    return RequestInfo(
        provider="mcp",
        endpoint="tools/call",
        tools=[call.tool],
        text=list(json_segments(call.arguments, "$.params.arguments")),
    )


def rpc_error(rpc_id: Any, message: str, data: dict[str, Any]) -> bytes:
    """A JSON-RPC error answer: what an MCP client expects instead of a broken stream."""
    return msgspec.json.encode(
        {
            "jsonrpc": "2.0",
            "id": rpc_id,
            "error": {"code": -32001, "message": message, "data": data},
        }
    )


class McpProvider(Unpriced):
    """The Provider face of MCP traffic, so the proxy's response path records it like any call.
    MCP streams (SSE) are passed through untouched; nothing in them is priced."""

    name = "mcp"

    def parse_request(self, endpoint: str, path: str, body: bytes) -> RequestInfo:
        call = parse_tools_call(body)
        if call is None:
            return RequestInfo(provider="mcp", endpoint=endpoint, parse_error="not a tools/call")
        return request_info(call)

    def parse_response(self, endpoint: str, body: bytes, content_type: str) -> ResponseInfo:
        try:
            doc = _decode_rpc.decode(body) if body else {}
        except _UNDECODABLE as e:
            if "text/event-stream" in content_type:
                return ResponseInfo(usage=Usage(source="missing"))
            return ResponseInfo(parse_error=f"{type(e).__name__}: {e}"[:300])
        err = doc.get("error") if isinstance(doc, dict) else None
        code = err.get("code") if isinstance(err, dict) else None
        return ResponseInfo(usage=Usage(source="missing"), error=f"jsonrpc:{code}" if err else None)


MCP: Provider = McpProvider()

#: Bytes of an MCP response read for its tool results.
MAX_RESULT_BYTES = 512 * 1024


def _result_texts(msg: Any, out: list[str]) -> None:
    result = msg.get("result") if isinstance(msg, dict) else None
    if not isinstance(result, dict):
        return
    for item in result.get("content") or ():
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append(item["text"])
    structured = result.get("structuredContent")
    if structured is not None:
        out.append(msgspec.json.encode(structured).decode())


def tool_result_texts(body: bytes) -> list[str]:
    """The texts of the tool results in an MCP response: a JSON-RPC body (or batch) or an SSE
    stream of them (``data:`` lines). Never raises."""
    body = body[:MAX_RESULT_BYTES]
    out: list[str] = []
    try:
        docs = [_decode_rpc.decode(body)]
    except _UNDECODABLE:
        docs = []
        for line in body.splitlines():
            if line.startswith(b"data:"):
                try:
                    docs.append(_decode_rpc.decode(line[5:]))
                except _UNDECODABLE:
                    continue
    for doc in docs:
        for msg in doc if isinstance(doc, list) else [doc]:
            _result_texts(msg, out)
    return out


class InlineScorer:
    """The scoring engine plus a little per-agent memory for history facts."""

    def __init__(self, engine: Engine | None = None, *, flow_salt: bytes | None = None) -> None:
        self.engine = engine or Engine.load()
        self._recent: dict[str, collections.deque[str]] = {}
        self._servers: dict[str, set[str]] = {}
        # Salted digests of the destinations each agent's calls named (engine.counterparties):
        # an address the agent already used is a known counterparty, not a new outside party.
        self._counterparties: dict[str, set[str]] = {}
        # Per (agent, session): digests of the tokens its tool results returned.
        self._flows: dict[tuple[str, str], SessionFlow] = {}
        #: Salts the token digests; a recorder process gets the proxy's (GOVRIX_FLOW_SALT), so
        #: the digests it sends back (``wire.ToolOutput``) match.
        self.flow_salt = flow_salt or os.urandom(16)

    def _flow(self, agent_id: str, session_id: str) -> SessionFlow:
        key = (agent_id, session_id)
        flow = self._flows.get(key)
        if flow is None:
            if len(self._flows) >= _FLOW_SESSIONS:
                self._flows.clear()
            flow = self._flows[key] = SessionFlow(self.flow_salt)
        return flow

    def observe_tool_result(
        self, agent_id: str, session_id: str, texts: Iterable[str]
    ) -> tuple[list[str], bool]:
        """Remember what a tool returned in a session (token digests and instruction cues), for
        the provenance and data-flow facts of the session's later calls; returns what was
        added (digests, instruction cue) for a scorer in another process (``merge_tool_output``)."""
        digests: list[str] = []
        cue = False
        for text in texts:
            if text:
                added, found = self._flow(agent_id, session_id).add_result(text)
                digests += added
                cue = cue or found
        return digests, cue

    def merge_tool_output(
        self, agent_id: str, session_id: str, digests: list[str], instruction: bool
    ) -> None:
        """What the recorder process's ``observe_tool_result`` found, for the inline MCP gate."""
        if digests or instruction:
            self._flow(agent_id, session_id).merge(digests, instruction)

    def session_flow(self, agent_id: str, session_id: str) -> Conversation | None:
        """What the session's tool results left behind, None when none were seen."""
        flow = self._flows.get((agent_id, session_id))
        return flow.conversation if flow is not None else None

    def _history(self, agent_id: str, server: str | None) -> HistoryFacts:
        recent = self._recent.get(agent_id)
        first = None
        if server is not None:
            seen = self._servers.setdefault(agent_id, set())
            first = server not in seen
            seen.add(server)
        known = self._counterparties.get(agent_id)
        return HistoryFacts(
            first_use_of_server=first,
            recent_actions=list(recent) if recent else [],
            known_counterparties=list(known) if known else [],
        )

    def _remember_counterparties(self, agent_id: str, digests: list[str]) -> None:
        if not digests:
            return
        known = self._counterparties.get(agent_id)
        if known is None:
            if len(self._counterparties) > 100_000:
                self._counterparties.clear()
            known = self._counterparties[agent_id] = set()
        if len(known) < _COUNTERPARTIES:
            known.update(digests)

    def remember(self, agent_id: str, action: str) -> None:
        """Add an action to the agent's recent history (also for actions scored elsewhere)."""
        q = self._recent.get(agent_id)
        if q is None:
            if len(self._recent) > 100_000:
                self._recent.clear()
            q = self._recent[agent_id] = collections.deque(maxlen=_RECENT)
        q.append(action)

    def _score(
        self,
        *,
        event_id: str,
        agent_id: str,
        session_id: str,
        action: str,
        timestamp: datetime,
        arguments: dict[str, Any],
        server: str | None = None,
        mcp_context: dict[str, Any] | None = None,
        conversation: Conversation | None = None,
    ) -> tuple[ActionEvent, ScoreResult, CallFacts]:
        doc: dict[str, Any] = {
            "event_id": event_id,
            "action": action,
            "timestamp": timestamp.isoformat(),
            "agent": {"agent_id": agent_id},
            "session": {"session_id": session_id},
            "data_fields_accessed": [str(k)[:512] for k in list(arguments)[:1000]],
            "parameters": arguments,
        }
        if mcp_context is not None:
            doc["mcp_context"] = mcp_context
        event = convert_action_event(doc)
        result, facts = self.engine.score_with_facts(
            event, self._history(agent_id, server), conversation
        )
        self.remember(agent_id, action)
        self._remember_counterparties(agent_id, self.engine.counterparties(facts))
        return event, result, call_facts(facts)

    def score_mcp(
        self,
        *,
        event_id: str,
        agent_id: str,
        session_id: str,
        server: str,
        verified: bool,
        call: McpCall,
        timestamp: datetime,
    ) -> tuple[ActionEvent, ScoreResult, CallFacts]:
        """Score an MCP ``tools/call`` as ``mcp:<server>:<tool>`` (and what policies may test)."""
        return self._score(
            event_id=event_id,
            agent_id=agent_id,
            session_id=session_id,
            action=f"mcp:{safe_part(server)}:{safe_part(call.tool)}",
            timestamp=timestamp,
            arguments=call.arguments,
            server=server,
            mcp_context={
                "server_name": server[:512],
                "transport": "http",
                "is_verified": verified,
                "tool_name": call.tool[:512],
            },
            conversation=self.session_flow(agent_id, session_id),
        )

    def score_tool_call(
        self,
        *,
        event_id: str,
        agent_id: str,
        session_id: str,
        name: str,
        arguments: str,
        timestamp: datetime,
        conversation: Conversation | None = None,
    ) -> tuple[ActionEvent, ScoreResult]:
        """Score a tool call of an LLM response as ``tool:<name>:call``; its arguments are the
        model's JSON text, kept as ``_raw`` when it is not JSON. `conversation`: the messages of
        the request that produced it (``conversation_of``)."""
        try:
            args = msgspec.json.decode(arguments) if arguments else {}
        except _UNDECODABLE:
            args = {"_raw": arguments[:4096]}
        if not isinstance(args, dict):
            args = {"_value": args}
        event, result, _facts = self._score(
            event_id=event_id,
            agent_id=agent_id,
            session_id=session_id,
            action=f"tool:{safe_part(name)}:call",
            timestamp=timestamp,
            arguments=args,
            conversation=conversation,
        )
        return event, result


def summary(result: ScoreResult) -> dict[str, Any]:
    """What goes into the event's ``tool_calls`` entry: the verdict, never argument values."""
    return {
        "score": result.score,
        "risk_level": result.risk_level,
        "violations": [v.rule_id for v in result.violations][:20],
    }


def score_row(customer: str, event: ActionEvent, result: ScoreResult) -> ScoreRow:
    """The ``actions`` and ``scores`` rows of an inline score."""
    return ScoreRow(
        action=Engine.action_row(customer, event, msgspec.json.encode(event).decode()),
        score=(
            customer,
            event.event_id,
            result.score,
            result.risk_level,
            result.confidence,
            result.reasoning,
            msgspec.json.encode(result.violations).decode(),
            result.compliance_refs,
            result.mitigations,
            msgspec.json.encode(result.score_components).decode(),
            result.scoring_source,
            result.scorer_version,
        ),
    )
