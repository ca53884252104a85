"""The Govrix mitmproxy addon: identify -> enforce -> forward -> parse -> record (DESIGN.md §4).

A thin conductor over the modules that hold the logic (identity, agents, providers, pricing, pii,
policy, lineage, writer). Rules it keeps:

- No database or network I/O in a hook: state is in memory, events leave through the writer.
- A hook that fails never breaks traffic: the request is forwarded, the event records what could
  not be parsed, the failure is counted (``govrix_proxy_hook_errors``) and logged.
- Streams are passed through chunk by chunk (``flow.response.stream`` set in ``responseheaders``)
  while a parser reads a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from mitmproxy import ctx, http

from addon import config as config_mod
from addon import ids, lineage, metrics, pii
from addon.agents import ALLOW, BLOCKED, RETIRED, UNAVAILABLE, AgentTable
from addon.budgets import Budgets, Denial, Reservation
from addon.event import Event
from addon.identity import (
    Identifier,
    Identity,
    Sessions,
    parse_proxy_authorization,
    scan_headers,
    vendor_session,
)
from addon.mcp import MCP, InlineScorer, parse_tools_call, rpc_error, summary
from addon.policy import Decision, PolicyContext, PolicyError, PolicyStore, watch
from addon.pricing import cost_usd
from addon.providers import (
    Provider,
    RequestInfo,
    ResponseInfo,
    StreamParser,
    Usage,
    detect,
    fill_prompt_estimate,
)
from addon.writer import AgentSighting, BatchWriter, ScoreRow
from api.scoring import ActionEvent, Engine, ScoreResult

log = logging.getLogger("govrix.proxy")

STREAM_TYPES = (
    "text/event-stream",
    "application/x-ndjson",
    "application/vnd.amazon.eventstream",
    "application/jsonl",
)
_json = msgspec.json.Encoder()


@dataclass(slots=True)
class Call:
    """Per-flow state, kept by the addon under the flow's id (``flow.metadata`` must stay
    serializable: ``mitmdump -w`` and mitmweb write it out). The metadata only gets the ids."""

    provider: Provider
    endpoint: str
    identity: Identity
    session_id: str
    request_event_id: str
    info: RequestInfo
    compliance_tag: str
    started: float  # wall clock, request ingress
    request_bytes: int
    parser: StreamParser | None = None
    scanner: pii.StreamScanner | None = None
    first_byte: float | None = None
    response_bytes: int = 0
    hook_seconds: float = 0.0
    done: bool = False
    reservation: Reservation | None = None
    tool_name: str | None = None
    rpc_id: Any = None
    risk: ScoreResult | None = None
    policy_decisions: list[dict[str, Any]] = field(default_factory=list)


class Tee:
    """The stream callable: every chunk goes on unchanged, at once; the parser reads a copy."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call

    def __call__(self, chunk: bytes) -> bytes:
        call = self.call
        if chunk:
            if call.first_byte is None:
                call.first_byte = time.time()
            call.response_bytes += len(chunk)
            if call.parser is not None:
                t0 = time.perf_counter()
                try:
                    call.parser.feed(chunk)
                except Exception:  # a parser bug must never cost the client its stream
                    metrics.child(metrics.HOOK_ERRORS, "stream").inc()
                    log.exception("stream parser failed; the stream goes on unparsed")
                    call.parser = None
                call.hook_seconds += time.perf_counter() - t0
        return chunk


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Govrix:
    """The addon. ``settings`` may be given directly (tests, offline replay)."""

    def __init__(
        self, settings: config_mod.Settings | None = None, *, replay: bool = False
    ) -> None:
        self.settings = settings
        self.replay = replay
        self.writer: BatchWriter | None = None
        self.agents: AgentTable = AgentTable(None)
        self.budgets: Budgets = Budgets(None)
        self.policies: PolicyStore = PolicyStore()
        self._policy_task: Any = None
        self.scorer: InlineScorer | None = None
        self.chain = lineage.Chain()
        self.identifier: Identifier | None = None
        self.sessions = Sessions()
        self._conn_users: dict[str, tuple[str, str]] = {}
        self._calls: dict[str, Call] = {}
        self._sighted: dict[str, float] = {}
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        loader.add_option(
            "govrix_config", str, "", "Path of the Govrix TOML config file (GOVRIX_CONFIG)."
        )

    def configure(self, updated: set[str]) -> None:
        if self.settings is not None and "govrix_config" not in updated:
            return
        from mitmproxy import exceptions

        path = getattr(ctx.options, "govrix_config", "") or None
        try:
            self.settings = config_mod.load(config_file=path)
        except config_mod.ConfigError as e:
            raise exceptions.OptionsError(str(e)) from e  # type: ignore[no-untyped-call]
        try:
            self._load_policies()
        except PolicyError as e:
            # No previous rules to fall back on: running without the operator's policy would be
            # a silent hole, and mitmproxy only logs errors raised by scripts. Refuse to start.
            print(f"govrix: GOVRIX_POLICY_FILE rejected: {e}", file=sys.stderr, flush=True)
            log.critical("GOVRIX_POLICY_FILE rejected: %s; refusing to start", e)
            os._exit(2)
        # Long streams have no total timeout; keep mitmproxy from buffering what we stream.
        with contextlib.suppress(Exception):
            ctx.options.update(connection_strategy="lazy")  # type: ignore[no-untyped-call]

    def running(self) -> None:
        # The writer, agent-table and budget threads share the GIL with mitmproxy's event loop;
        # a busy background thread can hold a request for up to one switch interval (CPython's
        # default: 5 ms). Operators can shorten it; our benchmarks could not tell 0.5 from 5 ms
        # apart on a noisy 2-core machine, so the default is left alone.
        if switch_ms := os.environ.get("GOVRIX_GIL_SWITCH_MS"):
            sys.setswitchinterval(float(switch_ms) / 1000)
        self.start()
        self._write_pidfile()
        if self.policies.path is not None and self._policy_task is None:
            self._policy_task = asyncio.get_running_loop().create_task(
                watch(self.policies), name="govrix-policy-watch"
            )

    def _write_pidfile(self) -> None:
        """``$GOVRIX_HOME/proxy.pid`` once the addon runs: a readiness signal for scripts."""
        if self.settings is None or self.replay:
            return
        with contextlib.suppress(OSError):
            path = self.settings.home / "proxy.pid"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{os.getpid()}\n")

    def _load_policies(self) -> None:
        """The policy file at start: a broken file stops the proxy (there are no previous rules)."""
        s = self.settings
        if s is not None and s.policy_file is not None and self.policies.path is None:
            store = PolicyStore(s.policy_file)
            store.load()
            self.policies = store

    def start(self) -> None:
        if self._started:
            return
        if self.settings is None:
            self.settings = config_mod.load()
        s = self.settings
        self._started = True
        self._load_policies()
        self.scorer = InlineScorer(Engine.load())
        self.identifier = Identifier(s.identity_secret)
        self.sessions = Sessions(s.session_idle_seconds)
        url = s.database_url or _embedded_url(s.home)
        if not url:
            log.warning(
                "no GOVRIX_DATABASE_URL and no embedded cluster: events go to the spool only"
            )
        self.writer = BatchWriter(
            url or "postgresql://invalid", s.spool_dir, retention_days=s.retention_days
        )
        self.writer.start()
        if not self.replay:
            self.agents = AgentTable(url, fail_mode=s.fail_mode).start()
            self.budgets = Budgets(url, configured=s.budgets).start()
            self._export_metrics()
            with contextlib.suppress(OSError):
                metrics.serve(s.metrics_port)
        log.info("govrix addon running (spool %s)", s.spool_dir)

    def done(self) -> None:
        if self.settings is not None and not self.replay:
            with contextlib.suppress(OSError):
                (self.settings.home / "proxy.pid").unlink(missing_ok=True)
        if self._policy_task is not None:
            self._policy_task.cancel()
        self.agents.stop()
        self.budgets.stop()
        if self.writer is not None:
            self.writer.stop()

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
        live.gauges["govrix_agent_table_live"] = (
            "1 when the agent table listener is connected.",
            lambda: float(self.agents.live),
        )
        for name in ("enqueued", "written", "spooled", "replayed", "dropped", "rejected"):
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

    # -- offline replay -------------------------------------------------------------------------

    def ingest(self, flow: http.HTTPFlow) -> bool:
        """Record one captured flow (``mitmdump -w``) as if it had passed through: no enforcement,
        no forwarding, the capture's own timestamps. True when it was an LLM or MCP call."""
        meta = flow.metadata.get("govrix")
        if isinstance(meta, dict):  # captured by this proxy: the upstream may have been rewritten
            if isinstance(meta.get("host"), str):
                flow.request.host_header = meta["host"]
            if meta.get("identity_kind") in ("proxy_auth", "header") and isinstance(
                meta.get("agent_name"), str
            ):
                flow.request.headers["x-govrix-agent"] = meta["agent_name"]
            if isinstance(meta.get("session_id"), str):
                flow.request.headers["x-govrix-session"] = meta["session_id"]
        self._request(flow)
        call = self._calls.get(flow.id)
        if call is None:
            return False
        if flow.response is not None:
            self._response(flow, call, error=None)
        else:
            self._response(
                flow, call, error=flow.error.msg if flow.error else "no response captured"
            )
        return True

    # -- proxy credentials (explicit mode) --------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        creds = parse_proxy_authorization(flow.request.headers.get("proxy-authorization"))
        s = self.settings
        if (
            s is not None
            and s.proxy_token is not None
            and (creds is None or creds[1] != s.proxy_token)
        ):
            flow.response = _proxy_auth_required()
            return
        if creds is not None:
            self._conn_users[flow.client_conn.id] = creds

    def client_disconnected(self, client: Any) -> None:
        self._conn_users.pop(client.id, None)

    # -- request --------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None or not (flow.live or self.replay):
            return
        t0 = time.perf_counter()
        try:
            self._request(flow)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "request").inc()
            log.exception("request hook failed; forwarding unrecorded")
        call = self._calls.get(flow.id)
        if isinstance(call, Call):
            call.hook_seconds += time.perf_counter() - t0

    def _request(self, flow: http.HTTPFlow) -> None:
        s = self.settings
        assert s is not None and self.identifier is not None
        req = flow.request
        get, kept = scan_headers(req.headers.fields)
        creds = parse_proxy_authorization(get("proxy-authorization")) or self._conn_users.get(
            flow.client_conn.id
        )
        if (
            s.proxy_token is not None
            and not self.replay
            and (creds is None or creds[1] != s.proxy_token)
        ):
            flow.response = _proxy_auth_required()
            return
        host = req.host
        if not host or host[0].isdigit() or ":" in host:
            host = req.pretty_host  # an address (transparent mode): the Host header names it
        port = req.port
        path = req.path.split("?", 1)[0]
        host_port = host if port in (80, 443) else f"{host}:{port}"
        found = detect(host_port, path, s.openai_compatible_hosts)
        identity = self.identifier.identify(
            get,
            creds[0] if creds else None,
            flow.client_conn.peername[0] if flow.client_conn.peername else None,
            req.query.get("key")
            if found is not None and found[0].name in ("gemini", "vertex")
            else None,
        )
        explicit_session = vendor_session(get)
        if kept is not None:
            req.headers.fields = kept
        if found is None:
            found = self._mcp_match(req)
        if found is None:
            return  # neither an LLM call nor an MCP tool call: untouched, unrecorded
        provider, endpoint = found
        session_id, _ = self.sessions.resolve(identity.agent_id, time.monotonic(), explicit_session)
        self._sight(identity, req.timestamp_start)

        started = req.timestamp_start
        body = _content(req)
        info = (
            provider.parse_request(endpoint, path, body)
            if body is not None
            else RequestInfo(
                provider=provider.name, endpoint=endpoint, parse_error="undecodable request body"
            )
        )
        if info.parse_error:
            metrics.child(metrics.PARSE_ERRORS, provider.name, "request").inc()
        call = Call(
            provider=provider,
            endpoint=endpoint,
            identity=identity,
            session_id=session_id,
            request_event_id=ids.event_id(),
            info=info,
            compliance_tag="default",
            started=started,
            request_bytes=len(req.raw_content or b""),
        )
        self._calls[flow.id] = call
        # Serializable breadcrumbs: a capture (``-w``) of this proxy can be replayed as itself.
        flow.metadata["govrix"] = {
            "agent_id": identity.agent_id,
            "agent_name": identity.name,
            "identity_kind": identity.kind,
            "session_id": session_id,
            "host": host,
            "request_event_id": call.request_event_id,
        }

        verdict = ALLOW if self.replay else self.agents.decide(identity.agent_id)
        if verdict != ALLOW:
            self._refuse(flow, call, verdict)
            return

        findings = pii.scan_segments(info.text) if s.pii_scan and info.text else []
        if provider is MCP and body is not None:
            self._score_mcp(call, body, host, req.port)

        if len(self.policies.current):
            ctx_ = self._policy_context(
                call, "request", findings, info.estimated_prompt_tokens, None
            )
            decision = self.policies.evaluate(ctx_)
            call.compliance_tag = decision.compliance_tag
            self._note_decision(call, "request", decision)
            if decision.block is not None:
                rule = decision.block.rule
                message = decision.block.message or f"blocked by policy rule {rule}"
                self._deny(
                    flow,
                    call,
                    403,
                    "policy_blocked",
                    message,
                    extra={"rule": rule},
                    findings=findings,
                )
                return
            if decision.redact and findings and body is not None:
                body = self._redact(req, body, call)

        if not self.replay and not self._reserve(flow, call, findings):
            return

        if info.stream and body is not None:
            new_body = provider.inject_stream_usage(endpoint, body)
            if new_body is not None:
                req.content = new_body

        up = s.upstreams.get(provider.name)
        if up is not None and not self.replay:
            req.scheme, req.host, req.port = up.scheme, up.host, up.port
            if up.path_prefix:
                req.path = up.path_prefix + req.path

        metrics.child(metrics.REQUESTS, provider.name, "forwarded").inc()
        # the request event is not on the forwarding path: record it after the hook returns
        self._after_send(self._emit_request, call, findings, None, None)

    def _refuse(self, flow: http.HTTPFlow, call: Call, verdict: str) -> None:
        name = call.identity.name
        if verdict == BLOCKED:
            self._deny(
                flow, call, 403, "agent_blocked", f"agent {name} is blocked by governance policy"
            )
        elif verdict == RETIRED:
            self._deny(flow, call, 403, "agent_retired", f"agent {name} is retired")
        else:
            assert verdict == UNAVAILABLE
            msg = "the agent table is not available and fail_mode is fail_closed"
            self._deny(flow, call, 503, "governance_unavailable", msg)

    def _deny(
        self,
        flow: http.HTTPFlow,
        call: Call,
        status: int,
        code: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        findings: list[pii.Finding] | None = None,
    ) -> None:
        """Answer instead of the upstream (403/429/503 JSON) and record the refused request.

        An MCP client gets a JSON-RPC error for its call instead, which it can surface to its
        model, rather than an HTTP error its transport may treat as a broken session.
        """
        body: dict[str, Any] = {
            "error": code,
            "message": message,
            "agent_id": call.identity.agent_id,
        }
        body |= extra or {}
        if call.risk is not None:
            body |= {"risk_level": call.risk.risk_level, "score": call.risk.score}
        hdrs = {"content-type": "application/json", "x-govrix-decision": code} | (headers or {})
        if call.provider is MCP:
            flow.response = http.Response.make(200, rpc_error(call.rpc_id, message, body), hdrs)
        else:
            flow.response = http.Response.make(status, _json.encode(body), hdrs)
        metrics.child(metrics.REQUESTS, call.provider.name, code).inc()
        self._emit_request(call, findings or [], status_code=status, error=code)
        call.done = True

    def _mcp_match(self, req: http.Request) -> tuple[Any, str] | None:
        """An MCP ``tools/call`` over HTTP: any JSON-RPC POST body that names the method."""
        if req.method != "POST" or "json" not in req.headers.get("content-type", ""):
            return None
        raw = req.raw_content or b""
        if b"tools/call" not in raw and b"tools/call" not in (_content(req) or b""):
            return None
        return MCP, "tools/call"

    def _score_mcp(self, call: Call, body: bytes, host: str, port: int) -> None:
        """Score the tool call inline; the verdict feeds the policy (``risk_level``)."""
        assert self.settings is not None and self.scorer is not None
        mcp_call = parse_tools_call(body)
        if mcp_call is None:
            return
        call.tool_name, call.rpc_id = mcp_call.tool, mcp_call.rpc_id
        servers = self.settings.mcp_servers
        name = servers.get(f"{host.lower()}:{port}") or servers.get(host.lower())
        try:
            event, result = self.scorer.score_mcp(
                event_id=call.request_event_id,
                agent_id=call.identity.agent_id,
                session_id=call.session_id,
                server=name or host,
                verified=name is not None,
                call=mcp_call,
                timestamp=_ts(call.started),
            )
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "mcp_score").inc()
            log.exception("inline scoring of an MCP call failed; forwarding unscored")
            return
        call.risk = result
        self._store_score(event, result)

    def _score_tool_calls(
        self, call: Call, rinfo: ResponseInfo, response_event_id: str
    ) -> list[dict[str, Any]]:
        """Score each tool call the model asked for (``tool:<name>:call``); never the arguments."""
        out: list[dict[str, Any]] = []
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
                        agent_id=call.identity.agent_id,
                        session_id=call.session_id,
                        name=tc.name,
                        arguments=tc.arguments,
                        timestamp=datetime.now(UTC),
                    )
                    entry |= {"action": event.action} | summary(result)
                    self._store_score(event, result)
                except Exception:
                    metrics.child(metrics.HOOK_ERRORS, "tool_score").inc()
                    log.exception("inline scoring of a tool call failed")
            out.append(entry)
        return out

    def _request_tools(self, call: Call) -> list[dict[str, Any]] | None:
        """Tools offered to the model (LLM calls), or the MCP tool called and its risk verdict."""
        if call.provider is MCP and call.tool_name is not None:
            entry: dict[str, Any] = {"name": call.tool_name}
            if call.risk is not None:
                entry |= summary(call.risk)
            return [entry]
        return [{"name": t, "offered": True} for t in call.info.tools] or None

    def _store_score(self, event: ActionEvent, result: ScoreResult) -> None:
        if self.writer is None or self.settings is None:
            return
        customer = self.settings.proxy_customer_id
        q = Engine.facts_for_history(event)
        self.writer.record_score(
            ScoreRow(
                action=(
                    customer,
                    event.event_id,
                    q.agent_id,
                    event.session.session_id if event.session else None,
                    event.action,
                    q.server_key,
                    q.resource_key,
                    event.timestamp,
                    msgspec.json.encode(event).decode(),
                ),
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
        )

    def _reserve(self, flow: http.HTTPFlow, call: Call, findings: list[pii.Finding]) -> bool:
        """Reserve the call's estimated usage against its budgets, or answer 429."""
        agent = call.identity
        has_budget, needs_usd = self.budgets.applies(agent.agent_id)
        if not has_budget:
            return True
        assert self.settings is not None
        info = call.info
        completion = info.max_tokens or self.settings.default_completion_tokens
        tokens = info.estimated_prompt_tokens + completion
        usd = None
        if needs_usd:
            estimate = Usage(
                prompt_tokens=info.estimated_prompt_tokens,
                completion_tokens=completion,
                total_tokens=tokens,
                source="estimated",
            )
            usd = cost_usd(call.provider.name, info.model, estimate)
        res = self.budgets.reserve(agent.agent_id, tokens, usd)
        if isinstance(res, Denial):
            spec = res.spec
            who = f"agent {agent.name}" if spec.agent_id else "all agents"
            message = (
                f"the {spec.period} {spec.metric} budget of {spec.limit:g} for {who} is used up"
            )
            self._deny(
                flow,
                call,
                429,
                "budget_exceeded",
                message,
                extra={"budget": spec.describe() | {"used": res.used}},
                headers={"retry-after": str(res.retry_after)},
                findings=findings,
            )
            return False
        call.reservation = res
        return True

    def _policy_context(
        self,
        call: Call,
        direction: str,
        findings: list[pii.Finding],
        tokens: int | None,
        cost: float | None,
    ) -> PolicyContext:
        return PolicyContext(
            agent_id=call.identity.agent_id,
            agent_name=call.identity.name,
            model=call.info.model,
            provider=call.provider.name,
            endpoint=call.endpoint,
            token_count=tokens,
            cost_usd=cost,
            pii_detected=bool(findings),
            pii_types=sorted({f.type for f in findings}),
            tool_name=call.tool_name,
            direction=direction,
            risk_level=call.risk.risk_level if call.risk is not None else None,
        )

    def _note_decision(self, call: Call, phase: str, d: Decision) -> None:
        if not d.matched:
            return
        note: dict[str, Any] = {"phase": phase, "matched": list(d.matched)}
        if d.block is not None:
            note["block"] = d.block.rule
        if d.tags:
            note["tags"] = list(d.tags)
        if d.logs:
            note["logs"] = list(d.logs)
        if d.redact:
            note["redact"] = True
        call.policy_decisions.append(note)

    def _redact(self, req: http.Request, body: bytes, call: Call) -> bytes:
        """Replace detected PII in the forwarded JSON body; the event keeps types and counts."""
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return body
        new_doc, n = pii.redact_json(doc)
        if n:
            body = _json.encode(new_doc)
            req.content = body
            call.policy_decisions[-1]["redacted"] = n
        return body

    def _emit_request(
        self, call: Call, findings: list[pii.Finding], status_code: int | None, error: str | None
    ) -> None:
        info = call.info
        ev = Event(
            id=call.request_event_id,
            agent_id=call.identity.agent_id,
            session_id=call.session_id,
            timestamp=_ts(call.started),
            direction="request",
            provider=call.provider.name,
            endpoint=call.endpoint,
            model=info.model,
            prompt_tokens=info.estimated_prompt_tokens or None,
            usage_source="estimated" if info.estimated_prompt_tokens else "missing",
            status_code=status_code,
            compliance_tag=call.compliance_tag,
            pii_detected=bool(findings),
            pii_types=sorted({f.type for f in findings}),
            pii_findings=[msgspec.structs.asdict(f) for f in findings] or None,
            tool_calls=self._request_tools(call),
            policy_decisions=call.policy_decisions or None,
            error=error,
            parse_error=info.parse_error,
            request_bytes=call.request_bytes,
        )
        self._record(ev)

    # -- response -------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self._calls.get(flow.id)
        if not isinstance(call, Call) or call.done or flow.response is None:
            return
        t0 = time.perf_counter()
        try:
            resp = flow.response
            ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            streamed = ctype in STREAM_TYPES or (call.info.stream and 200 <= resp.status_code < 300)
            if streamed:
                parser = call.provider.stream_parser(
                    call.endpoint, ctype, resp.headers.get("content-encoding")
                )
                if self.settings is not None and self.settings.pii_scan:
                    scanner = pii.StreamScanner()
                    call.scanner = scanner
                    parser.text_delta_callback = scanner.feed
                call.parser = parser
                resp.stream = Tee(call)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "responseheaders").inc()
            log.exception("responseheaders hook failed")
        call.hook_seconds += time.perf_counter() - t0

    def response(self, flow: http.HTTPFlow) -> None:
        call = self._calls.pop(flow.id, None)
        if call is None or call.done:
            return
        call.done = True  # from here on the flow belongs to the deferred recording below
        # mitmproxy sends a buffered response only when this hook returns: parse, cost, scan and
        # record right after it has gone out, on the same loop (so chain order is kept).
        self._after_send(self._record_response, flow, call)

    def _record_response(self, flow: http.HTTPFlow, call: Call) -> None:
        t0 = time.perf_counter()
        try:
            self._response(flow, call, error=None)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "response").inc()
            log.exception("response hook failed")
        call.hook_seconds += time.perf_counter() - t0
        metrics.ADDED_LATENCY.observe(call.hook_seconds)

    def _after_send(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` on the proxy's loop once the current hook has returned (at once offline)."""
        if self.replay:
            fn(*args)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            fn(*args)
            return
        loop.call_soon(fn, *args)

    def error(self, flow: http.HTTPFlow) -> None:
        """Upstream failure or a client that went away mid-stream: still one response event."""
        call = self._calls.pop(flow.id, None)
        if call is None or call.done:
            return
        try:
            self._response(flow, call, error=flow.error.msg if flow.error else "flow error")
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "error").inc()
            log.exception("error hook failed")

    def _response(self, flow: http.HTTPFlow, call: Call, *, error: str | None) -> None:
        call.done = True
        self._calls.pop(flow.id, None)
        resp = flow.response
        s = self.settings
        assert s is not None
        findings: list[pii.Finding] = []
        if call.parser is not None:
            rinfo = call.parser.finish()
            if call.scanner is not None:
                findings = call.scanner.findings("$.response.text")
        elif resp is not None and resp.stream is False and error is None:
            call.response_bytes = len(resp.raw_content or b"")
            body = _content(resp)
            if body is None:
                rinfo = ResponseInfo(parse_error="undecodable response body")
            else:
                ctype = resp.headers.get("content-type", "")
                rinfo = call.provider.parse_response(call.endpoint, body, ctype)
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
            metrics.child(metrics.PARSE_ERRORS, call.provider.name, "response").inc()
        usage = fill_prompt_estimate(rinfo.usage, call.info.estimated_prompt_tokens)
        model = rinfo.model or call.info.model
        status = resp.status_code if resp is not None else None
        # Failed calls are not billed; an estimate is only priced for a call that succeeded.
        billable = usage.source == "reported" or (
            usage.source == "estimated" and status is not None and status < 400
        )
        cost = cost_usd(call.provider.name, model, usage) if billable else None
        if call.reservation is not None:
            self.budgets.settle(call.reservation, usage.total_tokens or 0, cost)
            call.reservation = None
        if len(self.policies.current):
            ctx_ = self._policy_context(call, "response", findings, usage.total_tokens, cost)
            d = self.policies.evaluate(ctx_)
            if d.tags:
                call.compliance_tag = d.compliance_tag
            self._note_decision(call, "response", d)
        end = (
            resp.timestamp_end if resp is not None and resp.timestamp_end else None
        ) or time.time()
        first = call.first_byte or (resp.timestamp_start if resp is not None else None)
        response_id = ids.event_id()
        ev = Event(
            id=response_id,
            parent_id=call.request_event_id,
            agent_id=call.identity.agent_id,
            session_id=call.session_id,
            timestamp=_ts(end),
            direction="response",
            provider=call.provider.name,
            endpoint=call.endpoint,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            usage_source=usage.source,
            cost_usd=cost,
            status_code=status,
            latency_ms=round((end - call.started) * 1000, 3),
            ttfb_ms=round((first - call.started) * 1000, 3) if first else None,
            compliance_tag=call.compliance_tag,
            pii_detected=bool(findings),
            pii_types=sorted({f.type for f in findings}),
            pii_findings=[msgspec.structs.asdict(f) for f in findings] or None,
            tool_calls=self._score_tool_calls(call, rinfo, response_id) or None,
            policy_decisions=call.policy_decisions or None,
            error=error or rinfo.error,
            parse_error=rinfo.parse_error,
            request_bytes=call.request_bytes,
            response_bytes=call.response_bytes,
        )
        self._record(ev)
        metrics.child(metrics.UPSTREAM_LATENCY, call.provider.name).observe(end - call.started)
        if first:
            metrics.child(metrics.TTFB, call.provider.name).observe(first - call.started)
        metrics.child(metrics.BYTES, "request").inc(call.request_bytes)
        metrics.child(metrics.BYTES, "response").inc(call.response_bytes)

    # -- recording ------------------------------------------------------------------------------

    def _record(self, ev: Event) -> None:
        self.chain.seal(ev)
        metrics.child(metrics.EVENTS, ev.direction).inc()
        if self.writer is not None:
            self.writer.enqueue(ev)

    def _sight(self, identity: Identity, now: float) -> None:
        """Register an agent on first sight, and refresh last_seen_at at most once a minute."""
        last = self._sighted.get(identity.agent_id)
        if last is not None and now - last < 60:
            return
        self._sighted[identity.agent_id] = now
        if not self.agents.known(identity.agent_id):
            self.agents.set_local(identity.agent_id, "active")
        if self.writer is not None:
            self.writer.sight_agent(
                AgentSighting(
                    identity.agent_id, identity.name, identity.source_ip, identity.kind, _ts(now)
                )
            )


def _stat(w: BatchWriter, name: str) -> Any:
    return lambda: float(getattr(w.stats, name))


def _content(msg: http.Message) -> bytes | None:
    """The decoded body, read once; None when its content-encoding is broken."""
    try:
        return msg.get_content(strict=True) or b""
    except ValueError:
        return None


def _proxy_auth_required() -> http.Response:
    return http.Response.make(
        407,
        _json.encode(
            {
                "error": "proxy_auth_required",
                "message": "send Proxy-Authorization: Basic <agent>:<token>",
            }
        ),
        {"content-type": "application/json", "proxy-authenticate": 'Basic realm="govrix"'},
    )


def _embedded_url(home: Path) -> str | None:
    try:
        from scripts import pgembed

        c = pgembed.Cluster(home)
        if c.port_file.exists() and c.password_file.exists():
            return c.url()
    except Exception:
        return None
    return None
