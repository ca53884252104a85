"""The recorder: turns the proxy's raw captures into events, costs, scores and database rows.

Everything about a call that does not decide its fate runs here, off the proxy's event loop:
request and response parsing (buffered and streamed), PII scanning of what the hot path did not
need, usage and cost, response-phase policy tags, scoring of the tool calls a model asked for,
the lineage chain and the batch writer. The hot path (``addon/proxy.py``) sends ``Begin``,
``Stream``/``Chunk``, ``End`` messages (``addon/wire.py``) in call order.

By default the recorder runs as a child process of mitmdump (``python -m addon.recorder``): its
CPU then runs beside the proxy's event loop instead of competing with it for one GIL. It reads
frames on stdin, answers on stdout (budget settlements, tool actions, which calls are durable,
stats every second), logs to stderr, ignores SIGINT and stops at end of input after draining its
writer. The proxy keeps each call's captures until this process says its events are durable
(``addon/acks.py``): a recorder killed at any moment loses nothing its successor is not sent
again. ``GOVRIX_RECORDER=inline`` (and offline replay) runs the same class inside the proxy
process instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from addon import config as config_mod
from addon import ids, lineage, metrics, pii
from addon.acks import Acks
from addon.event import Event
from addon.mcp import MCP, InlineScorer, score_row, summary
from addon.policy import PolicyStore, note_decision, policy_context
from addon.pricing import cost_usd
from addon.providers import (
    Provider,
    RequestInfo,
    ResponseInfo,
    StreamParser,
    fill_prompt_estimate,
    parse_request,
    parse_response,
    provider_by_name,
)
from addon.sanitize import sanitize
from addon.wire import (
    UNKNOWN_USAGE,
    AgentSeen,
    Begin,
    Chunk,
    Deframer,
    End,
    Score,
    Settle,
    Stats,
    Stream,
    ToolHistory,
    ToProxy,
    ToRecorder,
    frame,
)
from addon.writer import AgentSighting, BatchWriter, ScoreRow
from api.scoring import Engine

log = logging.getLogger("govrix.recorder")


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def decode_body(body: bytes | None, encoding: str | None) -> bytes | None:
    """``body`` without its content-encoding; None when the encoding is broken or unknown."""
    if body is None or not encoding or not body:
        return body
    from mitmproxy.net import encoding as enc

    try:
        out = enc.decode(body, encoding)
    except ValueError:
        return None
    return out if isinstance(out, bytes) else None


@dataclass(slots=True)
class _Call:
    """A call between its ``Begin`` and its ``End``."""

    begin: Begin
    provider: Provider
    info: RequestInfo
    compliance_tag: str
    policy_decisions: list[dict[str, Any]]
    parser: StreamParser | None = None
    scanner: pii.StreamScanner | None = None
    streamed: bool = False
    resent: bool = False  # its events may be stored already: they fork off the chain


#: Calls whose End never came (a proxy that lost track of a flow) are forgotten past this many.
MAX_OPEN_CALLS = 100_000
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
        self.chain = lineage.Chain()
        self.writer: BatchWriter | None = None
        self.handled = 0
        self._calls: dict[str, _Call] = {}

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
        if self.scorer is None:
            self.scorer = InlineScorer(Engine.load())
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
        provider = MCP if b.provider == MCP.name else provider_by_name(b.provider)
        info = parse_request(provider, b.endpoint, b.path, decode_body(b.body, b.encoding))
        if info.parse_error:
            metrics.child(metrics.PARSE_ERRORS, provider.name, "request").inc()
        findings = b.findings
        if findings is None:
            findings = pii.scan_segments(info.text) if self.settings.pii_scan and info.text else []
        if provider is MCP and b.tool_name is not None:
            entry: dict[str, Any] = {"name": b.tool_name} | (b.risk or {})
            tools: list[dict[str, Any]] | None = [entry]
        else:
            tools = [{"name": t, "offered": True} for t in info.tools] or None
        if self.acks is not None and not b.recorded:
            self.acks.expect(b.request_id, b.request_id, response=False)
        self._record(
            Event(
                id=b.request_id,
                agent_id=b.agent_id,
                session_id=b.session_id,
                timestamp=_ts(b.started),
                direction="request",
                provider=provider.name,
                endpoint=b.endpoint,
                model=info.model,
                prompt_tokens=info.estimated_prompt_tokens or None,
                usage_source="estimated" if info.estimated_prompt_tokens else "missing",
                status_code=b.status_code,
                compliance_tag=b.compliance_tag,
                pii_detected=bool(findings),
                pii_types=sorted({f.type for f in findings}),
                pii_findings=[msgspec.structs.asdict(f) for f in findings] or None,
                tool_calls=tools,
                policy_decisions=b.policy_decisions or None,
                error=b.error,
                parse_error=info.parse_error,
                request_bytes=b.request_bytes,
                host=b.host,
                method=b.method,
            ),
            branch=b.resent,
            stored=b.recorded,
        )
        if b.status_code is None:  # forwarded: its End follows
            if len(self._calls) >= MAX_OPEN_CALLS:
                log.error("%d calls without an end: forgetting them", len(self._calls))
                self._calls.clear()
            self._calls[b.request_id] = _Call(
                b, provider, info, b.compliance_tag, b.policy_decisions, resent=b.resent
            )

    def _stream(self, m: Stream) -> None:
        call = self._calls.get(m.request_id)
        if call is None:
            return
        parser = call.provider.stream_parser(call.begin.endpoint, m.content_type, m.encoding)
        if self.settings.pii_scan:
            scanner = pii.StreamScanner()
            call.scanner = scanner
            parser.text_delta_callback = scanner.feed
        call.parser = parser
        call.streamed = True

    def _feed(self, call: _Call, data: bytes) -> None:
        if call.parser is None or not data:
            return
        try:
            call.parser.feed(data)
        except Exception:  # the stream went through anyway; record what we have
            metrics.child(metrics.HOOK_ERRORS, "stream").inc()
            log.exception("stream parser failed; the rest of the stream is not parsed")
            call.parser = None

    def _chunk(self, m: Chunk) -> None:
        call = self._calls.get(m.request_id)
        if call is not None:
            self._feed(call, m.data)

    def _end(self, e: End) -> None:
        call = self._calls.pop(e.request_id, None)
        if call is None:
            if self.acks is not None:  # its Begin failed, or was forgotten: no response event
                self.acks.give_up(e.request_id, response=True)
            return
        b = call.begin
        s = self.settings
        provider = call.provider
        findings: list[pii.Finding] = []
        if call.parser is not None and e.body:
            self._feed(call, e.body)
        if call.parser is not None:
            rinfo = call.parser.finish()
            if call.scanner is not None:
                findings = call.scanner.findings("$.response.text")
        elif not call.streamed and e.body is not None and e.error is None:
            body = decode_body(e.body, e.encoding)
            if body is None:
                rinfo = ResponseInfo(parse_error="undecodable response body")
            else:
                rinfo = parse_response(provider, b.endpoint, body, e.content_type)
            if s.pii_scan and rinfo.text:
                findings = pii.scan_segments([("$.response.text", rinfo.text)])
        else:
            rinfo = ResponseInfo()
        if s.pii_scan and rinfo.tool_calls:
            findings += pii.scan_segments(
                (f"$.response.tool_calls[{i}].arguments", tc.arguments)
                for i, tc in enumerate(rinfo.tool_calls)
            )
        if rinfo.parse_error:
            metrics.child(metrics.PARSE_ERRORS, provider.name, "response").inc()
        usage = fill_prompt_estimate(rinfo.usage, call.info.estimated_prompt_tokens)
        model = rinfo.model or call.info.model
        status = e.status_code
        # Failed calls are not billed; an estimate is only priced for a call that succeeded.
        billable = usage.source == "reported" or (
            usage.source == "estimated" and status is not None and status < 400
        )
        cost = cost_usd(provider.name, model, usage) if billable else None
        if b.reserved:
            unknown = usage.total_tokens is None and status is not None and status < 400
            # A call that succeeded and reported nothing keeps what it reserved (a bound).
            self.reply(
                Settle(b.request_id, UNKNOWN_USAGE if unknown else usage.total_tokens or 0, cost)
            )
        decisions = call.policy_decisions
        tag = call.compliance_tag
        if len(self.policies.current):
            d = self.policies.evaluate(
                policy_context(
                    agent_id=b.agent_id,
                    agent_name=b.agent_name,
                    info=call.info,
                    provider=provider.name,
                    endpoint=b.endpoint,
                    direction="response",
                    findings=findings,
                    tokens=usage.total_tokens,
                    cost=cost,
                    tool_name=b.tool_name,
                    risk_level=(b.risk or {}).get("risk_level"),
                )
            )
            if d.tags:
                tag = d.compliance_tag
            note_decision(decisions, "response", d)
        end = e.end
        first = e.first_byte or e.response_start
        response_id = e.response_id or ids.event_id()
        if self.acks is not None:
            self.acks.expect(response_id, b.request_id, response=True)
        self._record(
            Event(
                id=response_id,
                parent_id=b.request_id,
                agent_id=b.agent_id,
                session_id=b.session_id,
                timestamp=_ts(end),
                direction="response",
                provider=provider.name,
                endpoint=b.endpoint,
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                cached_tokens=usage.cached_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                usage_source=usage.source,
                cost_usd=cost,
                status_code=status,
                latency_ms=round((end - b.started) * 1000, 3),
                ttfb_ms=round((first - b.started) * 1000, 3) if first else None,
                compliance_tag=tag,
                pii_detected=bool(findings),
                pii_types=sorted({f.type for f in findings}),
                pii_findings=[msgspec.structs.asdict(f) for f in findings] or None,
                tool_calls=self._score_tool_calls(b, rinfo, response_id) or None,
                policy_decisions=decisions or None,
                error=e.error or rinfo.error,
                parse_error=rinfo.parse_error,
                request_bytes=b.request_bytes,
                response_bytes=e.response_bytes,
                host=b.host,
                method=b.method,
            ),
            branch=call.resent,
        )
        metrics.child(metrics.UPSTREAM_LATENCY, provider.name).observe(end - b.started)
        if first:
            metrics.child(metrics.TTFB, provider.name).observe(first - b.started)
        metrics.child(metrics.BYTES, "request").inc(b.request_bytes)
        metrics.child(metrics.BYTES, "response").inc(e.response_bytes)

    def _score_tool_calls(
        self, b: Begin, rinfo: ResponseInfo, response_event_id: str
    ) -> list[dict[str, Any]]:
        """Score each tool call the model asked for (``tool:<name>:call``); never the arguments."""
        out: list[dict[str, Any]] = []
        actions: list[str] = []
        for i, tc in enumerate(rinfo.tool_calls):
            entry: dict[str, Any] = {
                "name": tc.name,
                "id": tc.id,
                "arguments_bytes": len(tc.arguments),
            }
            if self.scorer is not None:
                try:
                    event, result = self.scorer.score_tool_call(
                        event_id=f"{response_event_id}:tool{i}",
                        agent_id=b.agent_id,
                        session_id=b.session_id,
                        name=tc.name,
                        arguments=tc.arguments,
                        timestamp=datetime.now(UTC),
                    )
                    entry |= {"action": event.action} | summary(result)
                    actions.append(event.action)
                    if self.writer is not None:
                        self.writer.record_score(
                            score_row(self.settings.proxy_customer_id, event, result)
                        )
                except Exception:
                    metrics.child(metrics.HOOK_ERRORS, "tool_score").inc()
                    log.exception("inline scoring of a tool call failed")
            out.append(entry)
        if actions:
            self.reply(ToolHistory(b.agent_id, actions))
        return out

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


# -- the child process ----------------------------------------------------------------------------


def step_back(nice: int) -> None:
    """Give the CPU to the proxy's event loop, the agents and the upstreams first.

    Everything here can wait milliseconds; a request waiting for a core cannot. As a batch task
    (SCHED_BATCH: no wake-up preemption) at ``nice`` (default 10), this process runs when a core
    is free, which on a proxy host is most of the time, and never cuts into a request in flight.
    BENCHMARKS.md ("Proxy") measures what it changes at concurrency 1.
    If the host is saturated by other work, the backlog shows in ``govrix_recorder_backlog_bytes``;
    ``GOVRIX_RECORDER_NICE=0`` makes the recorder an ordinary process again. Set before the writer
    thread starts, which inherits it."""
    if nice <= 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        os.nice(nice)
    except (AttributeError, OSError) as e:  # not Linux, or a sandbox that forbids it
        log.warning(
            "recorder: cannot lower its CPU priority (%s); running as an ordinary process", e
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m addon.recorder", description=__doc__)
    ap.add_argument("--config", default="", help="the proxy's GOVRIX_CONFIG file, if any")
    ap.add_argument("--database-url", default="", help="where events go (default: settings)")
    args = ap.parse_args(argv)
    # The proxy decides when we stop (end of input); a Ctrl-C to the process group must not cut
    # the drain short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="govrix-recorder %(levelname)s %(name)s: %(message)s",
    )
    # stdout carries frames: keep stray prints of any library off it.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    in_fd = sys.stdin.fileno()

    def reply(msg: ToProxy) -> None:
        data = memoryview(frame(msg))
        try:
            while data:
                n = os.write(out_fd, data)
                data = data[n:]
        except OSError:  # the proxy is gone: keep draining into the database regardless
            pass

    # The writer thread makes events durable; this loop tells the proxy. A self-pipe wakes it
    # from select() as soon as there is something to tell (answers leave from this thread only).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def wake() -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(wake_w, b"!")

    def acknowledge() -> None:
        if (durable := acks.take()) is not None:
            reply(durable)

    settings = config_mod.load(config_file=args.config or None)
    step_back(settings.recorder_nice)
    acks = Acks(wake)
    rec = Recorder(
        settings, reply=reply, database_url=args.database_url or settings.database_url, acks=acks
    ).start()
    deframer = Deframer(ToRecorder)
    next_tick = 0.0
    try:
        while True:
            ready, _, _ = select.select([in_fd, wake_r], [], [], 0.5)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            if in_fd in ready:
                data = os.read(in_fd, 1 << 20)
                if not data:
                    break
                for msg in deframer.feed(data):
                    rec.handle(msg)
            acknowledge()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 1.0
                rec.tick()
                reply(Stats(rec.handled, _exposition()))
    finally:
        if deframer.pending:
            log.error("input ended inside a message (%d bytes): the proxy died", deframer.pending)
        rec.stop()  # the writer commits or spools what it holds: the last acknowledgements
        acknowledge()
        reply(Stats(rec.handled, _exposition()))
    return 0


def _exposition() -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(metrics.REGISTRY)


if __name__ == "__main__":
    raise SystemExit(main())
