"""The recorder: turns the proxy's raw captures into events, costs, scores and database rows.

Everything about a call that does not decide its fate runs here, off the proxy's event loop:
request and response parsing (buffered and streamed), PII scanning of what the hot path did not
need, usage and cost, response-phase policy tags, scoring of the tool calls a model asked for,
the lineage chain and the batch writer. The hot path (``addon/proxy.py``) sends ``Begin``,
``Stream``/``Chunk``, ``End`` messages (``addon/wire.py``) in call order.

By default the recorder runs as a child process of mitmdump (``python -m addon.recorder``,
``__main__.py``): its CPU then runs beside the proxy's event loop instead of competing with it for
one GIL. The proxy keeps each call's captures until this process says its events are durable
(``addon/acks.py``): a recorder killed at any moment loses nothing its successor is not sent
again. ``GOVRIX_RECORDER=inline`` (and offline replay) runs the same class inside the proxy
process instead (``addon/sinks``, ``addon/supervisor.py``).

``Recorder`` (here) is the conductor: one message at a time, its lifecycle, the lineage chain and
the writer. Its parts:

- ``calls.py``: a call between its ``Begin`` and its ``End``, and its stream being parsed.
- ``requests.py``: the request event, from a ``Begin``.
- ``responses.py``: the response event, from an ``End`` (parsing, PII, cost, ``Settle``, tags).
- ``tool_calls.py``: scoring of the tool calls a model asked for.
- ``__main__.py``: the child process (pipes, acknowledgements, stats, CPU priority).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from addon import config as config_mod
from addon import ids, lineage, metrics
from addon.acks import Acks
from addon.event import Event
from addon.mcp import InlineScorer, tool_result_texts
from addon.policy import PolicyStore
from addon.policy.sync import PolicySync
from addon.providers import RequestInfo, ResponseInfo, fill_prompt_estimate
from addon.recorder.calls import MAX_OPEN_CALLS, OpenCall, decode_body, feed, open_stream
from addon.recorder.requests import request_event
from addon.recorder.responses import (
    billed_cost,
    observe,
    read_response,
    response_event,
    response_tag,
    settlement,
)
from addon.recorder.tool_calls import score_tool_calls
from addon.sanitize import sanitize
from addon.wire import (
    AgentSeen,
    Begin,
    Chunk,
    End,
    Score,
    Stream,
    ToolHistory,
    ToolOutput,
    ToProxy,
    ToRecorder,
)
from addon.writer import AgentSighting, BatchWriter, ScoreRow
from api.scoring import Engine

log = logging.getLogger("govrix.recorder")

#: The proxy's salt for tool-result digests, handed to a recorder process (``ToolOutput``).
FLOW_SALT_ENV = "GOVRIX_FLOW_SALT"
#: The error of a call still open when the recorder stops (the proxy exited before it ended).
ABORTED = "aborted: the proxy stopped before the call ended"


class Recorder:
    """Handles the messages of ``addon/wire.py``; ``reply`` carries answers to the proxy."""

    def __init__(
        self,
        settings: config_mod.Settings,
        *,
        reply: Callable[[ToProxy], None],
        database_url: str | None = None,
        scorer: InlineScorer | None = None,
        policies: PolicyStore | None = None,
        acks: Acks | None = None,
    ) -> None:
        self.settings = settings
        #: In a child process: which calls' events became durable, for ``Durable`` answers.
        self.acks = acks
        self.reply = reply
        self.database_url = database_url
        self.scorer = scorer
        self._shared_scorer = scorer is not None  # the proxy's own (inline): one history
        #: In-process (inline), the proxy's own store: one set of rules, reloaded once.
        self.policies = policies if policies is not None else PolicyStore()
        self._own_policies = policies is None
        self._policy_sync: PolicySync | None = None
        self.chain = lineage.Chain()
        self.writer: BatchWriter | None = None
        self.handled = 0
        self._calls: dict[str, OpenCall] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Recorder:
        s = self.settings
        if s.policy_file is not None and self._own_policies:
            store = PolicyStore(s.policy_file)
            try:
                store.load()
            except Exception as e:  # the proxy checked the file at start; keep recording
                log.error("policy file rejected by the recorder: %s", e)
            self.policies = store
        if self._own_policies and self.database_url:
            # Its own process: follow the stored versions as the proxy does, but never publish
            # the file (the proxy does, once).
            self._policy_sync = PolicySync(self.policies, self.database_url, publish=False).start()
        if self.scorer is None:
            salt = os.environ.get(FLOW_SALT_ENV)
            self.scorer = InlineScorer(
                Engine.load(internal_domains=s.internal_domains),
                flow_salt=bytes.fromhex(salt) if salt else None,
            )
        url = self.database_url
        if not url:
            log.warning(
                "no GOVRIX_DATABASE_URL and no embedded cluster: events go to the spool only"
            )
        self.writer = BatchWriter(
            url or "postgresql://invalid",
            s.spool_dir,
            retention_days=s.retention_days,
            on_durable=self.acks.durable if self.acks is not None else None,
        )
        self.writer.start()
        self._export_metrics()
        return self

    def stop(self) -> None:
        """Record the calls still open as aborted, then drain the writer (commit or spool)."""
        self.abort_open()
        if self.writer is not None:
            self.writer.stop()
        if self._policy_sync is not None:
            self._policy_sync.stop()
            self._policy_sync = None

    def abort_open(self, error: str = ABORTED) -> None:
        """End every call whose ``End`` never came (the proxy stopped, or was killed, first), so
        that each request event has its response event, with what was streamed so far."""
        if not self._calls:
            return
        log.warning(
            "%d calls still open at the end of input: recorded as aborted", len(self._calls)
        )
        now = time.time()
        for key in list(self._calls):
            self.handle(End(request_id=key, status_code=None, end=now, error=error))

    def tick(self) -> None:
        """Once a second: pick up an edited policy file (the proxy does it for a shared store)."""
        if not self._own_policies:
            return
        try:
            self.policies.maybe_reload()
        except Exception:
            log.exception("policy reload failed")

    def _export_metrics(self) -> None:
        w = self.writer
        assert w is not None
        live = metrics.LIVE
        live.gauges["govrix_writer_buffer_depth"] = (
            "Events waiting in the ring buffer.",
            lambda: w.stats.depth(),
        )
        live.gauges["govrix_writer_spool_bytes"] = (
            "Bytes waiting in the spool.",
            lambda: w.stats.spool_bytes(),
        )
        live.gauges["govrix_writer_lag_seconds"] = (
            "Seconds events have waited with no batch committed or spooled (0: none waiting).",
            lambda: w.stats.lag(),
        )
        for name in (
            "enqueued",
            "written",
            "spooled",
            "replayed",
            "already_present",
            "dropped",
            "rejected",
        ):
            live.counters[f"govrix_writer_{name}"] = (
                f"Events {name} by the writer.",
                _stat(w, name),
            )
        from addon import pricing

        live.labelled.append(
            (
                "govrix_unknown_model",
                "Calls whose model has no known price (cost_usd is null).",
                ["provider", "model"],
                lambda: {k: float(v) for k, v in pricing.UNKNOWN_MODEL_COUNT.items()},
            )
        )

    # -- messages -----------------------------------------------------------------------------

    def handle(self, msg: ToRecorder) -> None:
        """One message; a failure is counted and logged, never raised (the next one goes on)."""
        self.handled += 1
        try:
            if isinstance(msg, Chunk):
                self._chunk(msg)
            elif isinstance(msg, Begin):
                self._begin(msg)
            elif isinstance(msg, End):
                self._end(msg)
            elif isinstance(msg, Stream):
                self._stream(msg)
            elif isinstance(msg, AgentSeen):
                if self.writer is not None:
                    self.writer.sight_agent(
                        AgentSighting(
                            msg.agent_id,
                            msg.name,
                            msg.source_ip,
                            msg.identity_kind,
                            msg.last_seen_at,
                        )
                    )
            elif isinstance(msg, Score):
                # The proxy's scorer remembered it already; ours, in a child process, must too.
                if self.scorer is not None and not self._shared_scorer:
                    self.scorer.remember(msg.agent_id, msg.action_name)
                if self.writer is not None:
                    self.writer.record_score(ScoreRow(tuple(msg.action), tuple(msg.score)))
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "recorder").inc()
            log.exception("recording a %s message failed", type(msg).__name__)
            if self.acks is not None and isinstance(msg, Begin | End):
                # no event comes of it; sent again it would fail again: the proxy may let go
                self.acks.give_up(msg.request_id, response=isinstance(msg, End))

    def _begin(self, b: Begin) -> None:
        event, call = request_event(b, pii_scan=self.settings.pii_scan)
        if self.acks is not None and not b.recorded:
            self.acks.expect(b.request_id, b.request_id, response=False)
        self._record(event, branch=b.resent, stored=b.recorded)
        if b.status_code is None:  # forwarded: its End follows
            if len(self._calls) >= MAX_OPEN_CALLS:
                log.error("%d calls without an end: forgetting them", len(self._calls))
                self._calls.clear()
            self._calls[b.request_id] = call

    def _stream(self, m: Stream) -> None:
        call = self._calls.get(m.request_id)
        if call is not None:
            open_stream(call, m, pii_scan=self.settings.pii_scan)

    def _chunk(self, m: Chunk) -> None:
        call = self._calls.get(m.request_id)
        if call is not None:
            feed(call, m.data)

    def _end(self, e: End) -> None:
        call = self._calls.pop(e.request_id, None)
        if call is None:
            if self.acks is not None:  # its Begin failed, or was forgotten: no response event
                self.acks.give_up(e.request_id, response=True)
            return
        b = call.begin
        rinfo, findings = read_response(call, e, pii_scan=self.settings.pii_scan)
        usage = fill_prompt_estimate(rinfo.usage, call.info.estimated_prompt_tokens)
        model = rinfo.model or call.info.model
        cost = billed_cost(call.provider.name, model, usage, e.status_code)
        if b.reserved:
            self.reply(settlement(b.request_id, usage, e.status_code, cost))
        tag = response_tag(self.policies, call, findings, usage, cost)
        response_id = e.response_id or ids.event_id()
        if self.acks is not None:
            self.acks.expect(response_id, b.request_id, response=True)
        tool_calls = self._score_tool_calls(b, rinfo, response_id, call.info)
        if call.provider.name == "mcp" and e.error is None:
            self._observe_tool_result(call, e)
        self._record(
            response_event(
                call,
                e,
                response_id=response_id,
                rinfo=rinfo,
                usage=usage,
                model=model,
                cost=cost,
                tag=tag,
                findings=findings,
                tool_calls=tool_calls,
            ),
            branch=call.resent,
        )
        observe(call, e)

    def _score_tool_calls(
        self, b: Begin, rinfo: ResponseInfo, response_event_id: str, request: RequestInfo
    ) -> list[dict[str, Any]]:
        """Score each tool call the model asked for; the actions join the proxy's history."""
        out, actions = score_tool_calls(
            self.scorer,
            b,
            rinfo,
            response_event_id,
            customer_id=self.settings.proxy_customer_id,
            record_score=self._record_score,
            request=request,
        )
        if actions:
            self.reply(ToolHistory(b.agent_id, actions))
        return out

    def _observe_tool_result(self, call: OpenCall, e: End) -> None:
        """An MCP tool result: its token digests join the session's flow (``addon/mcp.py``),
        and the proxy's scorer's when this recorder runs in its own process."""
        if self.scorer is None:
            return
        if call.mcp_body is not None:
            body = bytes(call.mcp_body) + (e.body or b"")
        else:
            body = decode_body(e.body, e.encoding) or b""
        texts = tool_result_texts(body) if body else []
        if not texts:
            return
        b = call.begin
        digests, cue = self.scorer.observe_tool_result(b.agent_id, b.session_id, texts)
        if not self._shared_scorer and (digests or cue):
            self.reply(ToolOutput(b.agent_id, b.session_id, digests, cue))

    def _record_score(self, row: ScoreRow) -> None:
        if self.writer is not None:
            self.writer.record_score(row)

    def _record(self, ev: Event, *, branch: bool = False, stored: bool = False) -> None:
        """Chain and write one event. ``branch``: it may be stored already (a resent capture),
        so it forks off the chain (``Chain.branch``); ``stored``: it is, nothing to write."""
        if stored:
            return
        seal = self.chain.branch if branch else self.chain.seal
        seal(sanitize(ev))  # the chain covers the text as stored
        metrics.child(metrics.EVENTS, ev.direction).inc()
        if self.writer is not None:
            self.writer.enqueue(ev)


def _stat(w: BatchWriter, name: str) -> Callable[[], float]:
    return lambda: float(getattr(w.stats, name))


__all__ = ["ABORTED", "FLOW_SALT_ENV", "MAX_OPEN_CALLS", "Recorder"]
