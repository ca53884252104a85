"""The Govrix mitmproxy addon: identify -> enforce -> forward -> capture (DESIGN.md §4).

The hot path. It does what decides a call's fate, in order: identity, kill switch, and only when
they are configured, request parsing, budgets, policies and the PII scan they need; then it hands
raw captures (``addon/capture.py``) to the recorder (``addon/recorder.py``), which parses, costs,
scans, scores, chains and writes, by default in a child process so that none of it competes with
mitmproxy's event loop for the GIL. Rules it keeps:

- No database or network I/O in a hook: state is in memory, captures leave through a pipe.
- A hook that fails never breaks traffic: the request is forwarded, the event records what could
  not be parsed, the failure is counted (``govrix_proxy_hook_errors``) and logged.
- Streams are passed through chunk by chunk (``flow.response.stream`` set in ``responseheaders``)
  while the recorder parses a copy.
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
from addon import ids, metrics, pii
from addon.agents import ALLOW, BLOCKED, RETIRED, UNAVAILABLE, AgentTable
from addon.budgets import Budgets, Denial, Reservation
from addon.capture import Begin, Chunk, End, Score, Seen, Settle, Sight, Stream
from addon.channel import InlineSink, ProcessSink
from addon.identity import (
    Identifier,
    Identity,
    Sessions,
    parse_proxy_authorization,
    scan_headers,
    vendor_session,
)
from addon.mcp import MCP, InlineScorer, parse_tools_call, rpc_error, score_row, summary
from addon.policy import (
    PolicyContext,
    PolicyError,
    PolicyStore,
    note_decision,
    policy_context,
    watch,
)
from addon.pricing import cost_usd
from addon.providers import Provider, RequestInfo, Usage, detect
from addon.recorder import Recorder
from api.scoring import Engine, ScoreResult

log = logging.getLogger("govrix.proxy")

STREAM_TYPES = (
    "text/event-stream",
    "application/x-ndjson",
    "application/vnd.amazon.eventstream",
    "application/jsonl",
)
_json = msgspec.json.Encoder()


#: A streamed response's copy goes to the recorder in pieces of about this size.
CHUNK_FLUSH_BYTES = 256 * 1024
#: A recorder process that dies is restarted, up to this many times within RESPAWN_WINDOW
#: seconds; past that (a capture that crashes it every time?) the proxy records in-process.
MAX_RESPAWNS = 3
RESPAWN_WINDOW = 300.0
#: (host, path) pairs whose provider is remembered; past this, the memory starts over.
DETECT_CACHE_SIZE = 4096


@dataclass(slots=True)
class Call:
    """Per-flow state, kept by the addon under the flow's id (``flow.metadata`` must stay
    serializable: ``mitmdump -w`` and mitmweb write it out). The metadata only gets the ids."""

    key: str  # the request event id
    provider: Provider
    endpoint: str
    identity: Identity
    session_id: str
    started: float  # wall clock, request ingress
    request_bytes: int
    info: RequestInfo | None  # parsed only when enforcement or streaming needs it
    compliance_tag: str = "default"
    content_type: str = ""  # of the response, read once in ``responseheaders``
    encoding: str | None = None  # ... and its content-encoding
    streamed: bool = False
    chunks: list[bytes] = field(default_factory=list)
    pending: int = 0
    first_byte: float | None = None
    response_bytes: int = 0
    hook_seconds: float = 0.0
    done: bool = False
    reserved: bool = False
    tool_name: str | None = None
    rpc_id: Any = None
    risk: ScoreResult | None = None
    policy_decisions: list[dict[str, Any]] = field(default_factory=list)


class Tee:
    """The stream callable: every chunk goes on unchanged, at once; the recorder gets a copy."""

    __slots__ = ("call", "sink")

    def __init__(self, call: Call, sink: Any) -> None:
        self.call = call
        self.sink = sink

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            call = self.call
            if call.first_byte is None:
                call.first_byte = time.time()
            call.response_bytes += len(chunk)
            call.chunks.append(chunk)
            call.pending += len(chunk)
            if call.pending >= CHUNK_FLUSH_BYTES:
                self.sink.send(Chunk(call.key, b"".join(call.chunks)))
                call.chunks.clear()
                call.pending = 0
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
        self.sink: ProcessSink | InlineSink | None = None
        self.agents: AgentTable = AgentTable(None)
        self.budgets: Budgets = Budgets(None)
        self.policies: PolicyStore = PolicyStore()
        self._policy_task: Any = None
        self.scorer: InlineScorer | None = None
        self.identifier: Identifier | None = None
        self.sessions = Sessions()
        self.lost = 0  # captures lost with a recorder process that died
        self._conn_users: dict[str, tuple[str, str]] = {}
        self._calls: dict[str, Call] = {}
        self._reservations: dict[str, Reservation] = {}
        self._sighted: dict[str, float] = {}
        self._detected: dict[tuple[str, str], tuple[Any, str] | None] = {}
        self._respawns: list[float] = []  # when recorder processes were restarted
        self._config_file: str | None = None
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
            self._detected.clear()  # compatible hosts may have changed
        except config_mod.ConfigError as e:
            raise exceptions.OptionsError(str(e)) from e  # type: ignore[no-untyped-call]
        self._config_file = path
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
        # The agent-table and budget threads share the GIL with mitmproxy's event loop; a busy
        # background thread can hold a request for up to one switch interval (CPython's default:
        # 5 ms). Operators can shorten it. (The recorder, the busiest part, is a process.)
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
        self.sink = self._recorder_sink(s, url)
        if not self.replay:
            self.agents = AgentTable(url, fail_mode=s.fail_mode).start()
            self.budgets = Budgets(url, configured=s.budgets).start()
            self._export_metrics()
            with contextlib.suppress(OSError):
                metrics.serve(s.metrics_port)
        log.info("govrix addon running (recorder: %s, spool %s)", self.sink.mode, s.spool_dir)

    def _recorder_sink(self, s: config_mod.Settings, url: str | None) -> ProcessSink | InlineSink:
        if s.recorder == "process" and not self.replay:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                env = dict(os.environ)
                env["GOVRIX_HOME"] = str(s.home)
                if url:
                    env["GOVRIX_DATABASE_URL"] = url
                if s.policy_file is not None:
                    env["GOVRIX_POLICY_FILE"] = str(s.policy_file.resolve())
                sink = ProcessSink(
                    env=env,
                    on_reply=self._on_reply,
                    on_death=self._on_recorder_death,
                    config_file=self._config_file,
                )
                try:
                    return sink.start(loop)
                except OSError as e:
                    log.error("cannot start the recorder process (%s): recording inline", e)
        return self._inline_sink(url)

    def _inline_sink(self, url: str | None) -> InlineSink:
        assert self.settings is not None
        recorder = Recorder(
            self.settings, reply=self._on_reply, database_url=url, scorer=self.scorer
        ).start()
        return InlineSink(recorder, deferred=not self.replay)

    def done(self) -> None:
        if self.settings is not None and not self.replay:
            with contextlib.suppress(OSError):
                (self.settings.home / "proxy.pid").unlink(missing_ok=True)
        if self._policy_task is not None:
            self._policy_task.cancel()
        if self.sink is not None:
            self.sink.close()  # settlements still arrive here: budgets stop after
        self.agents.stop()
        self.budgets.stop()

    def _export_metrics(self) -> None:
        live = metrics.LIVE
        live.gauges["govrix_agent_table_live"] = (
            "1 when the agent table listener is connected.",
            lambda: float(self.agents.live),
        )
        live.gauges["govrix_recorder_backlog_bytes"] = (
            "Captures waiting for the recorder process to take them.",
            lambda: float(self.sink.backlog_bytes if self.sink is not None else 0),
        )
        live.counters["govrix_recorder_lost"] = (
            "Captures lost with a recorder process that died (see the log).",
            lambda: float(
                self.lost + (self.sink.dropped if isinstance(self.sink, ProcessSink) else 0)
            ),
        )
        metrics.REMOTE.append(
            lambda: self.sink.metrics if isinstance(self.sink, ProcessSink) else b""
        )

    # -- the recorder's answers -------------------------------------------------------------------

    def _on_reply(self, msg: Any) -> None:
        if isinstance(msg, Settle):
            res = self._reservations.pop(msg.key, None)
            if res is not None:
                self.budgets.settle(res, msg.tokens, msg.usd)
        elif isinstance(msg, Seen) and self.scorer is not None:
            for action in msg.actions:
                self.scorer.remember(msg.agent_id, action)

    def _on_recorder_death(self, lost: int, waiting: list[Any]) -> None:
        """Start a new recorder process, or record in this one if they keep dying; either way
        starting with what the dead one had not taken."""
        assert self.settings is not None
        self.lost += lost
        url = self.settings.database_url or _embedded_url(self.settings.home)
        now = time.monotonic()
        self._respawns = [t for t in self._respawns if now - t < RESPAWN_WINDOW]
        sink: ProcessSink | InlineSink | None = None
        if len(self._respawns) < MAX_RESPAWNS:
            self._respawns.append(now)
            sink = self._recorder_sink(self.settings, url)
            if isinstance(sink, ProcessSink):
                log.warning(
                    "recorder process restarted (%d of %d allowed within %.0f s)",
                    len(self._respawns),
                    MAX_RESPAWNS,
                    RESPAWN_WINDOW,
                )
        if sink is None:
            log.error(
                "recorder process died %d times within %.0f s: recording in the proxy process "
                "from now on (restart the proxy to bring it back)",
                MAX_RESPAWNS + 1,
                RESPAWN_WINDOW,
            )
            sink = self._inline_sink(url)
        if isinstance(sink, InlineSink):
            metrics.REMOTE.clear()  # this process's own registry counts from now on
        # Reservations of calls that ended but whose End is gone with the child: settle them
        # at their estimate rather than hold the budget forever.
        open_keys = {c.key for c in self._calls.values()}
        ending = {m.key for m in waiting if isinstance(m, End)}
        for key in list(self._reservations):
            if key not in open_keys and key not in ending:
                res = self._reservations.pop(key)
                self.budgets.settle(res, res.tokens, res.usd)
        self.sink = sink
        for msg in waiting:
            sink.send(msg)

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
        call = self._request(flow)
        if call is None:
            return False
        self._calls.pop(flow.id, None)
        if call.done:  # refused by a policy: its request event is all there is
            return True
        if flow.response is not None:
            self._end(flow, call, error=None)
        else:
            self._end(flow, call, error=flow.error.msg if flow.error else "no response captured")
        return True

    # -- proxy credentials (explicit mode) --------------------------------------------------------

    def _detect(self, host_port: str, path: str) -> tuple[Any, str] | None:
        """``detect``, remembered: a fleet calls few distinct (host, path) pairs, and the lookup
        walks host suffixes and path patterns every time."""
        key = (host_port, path)
        try:
            return self._detected[key]
        except KeyError:
            pass
        assert self.settings is not None
        found = detect(host_port, path, self.settings.openai_compatible_hosts)
        if len(self._detected) >= DETECT_CACHE_SIZE:  # paths with ids in them: start over
            self._detected.clear()
        self._detected[key] = found
        return found

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
        if call is not None:
            call.hook_seconds += time.perf_counter() - t0

    def _request(self, flow: http.HTTPFlow) -> Call | None:
        """Identify, enforce, capture. The call when it is recorded (forwarded or refused)."""
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
            return None
        host = req.host
        if not host or host[0].isdigit() or ":" in host:
            # an address (transparent mode): the Host header names it
            host = _host_name(get("host")) or req.pretty_host
        port = req.port
        path = req.path.split("?", 1)[0]
        host_port = host if port in (80, 443) else f"{host}:{port}"
        found = self._detect(host_port, path)
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
            return None  # neither an LLM call nor an MCP tool call: untouched, unrecorded
        provider, endpoint = found
        session_id, _ = self.sessions.resolve(identity.agent_id, time.monotonic(), explicit_session)
        self._sight(identity, req.timestamp_start)

        raw = req.raw_content or b""
        encoding = get("content-encoding")
        body: bytes | None = raw
        if encoding:  # rare for requests: decode here, the recorder gets plain bytes
            body, encoding = _content(req), None
        policies = len(self.policies.current) > 0
        has_budget, needs_usd = (False, False) if self.replay else self.budgets.applies(
            identity.agent_id
        )
        # Parse inline only what enforcement or streaming needs; the recorder parses the rest.
        must_parse = (
            policies
            or has_budget
            or provider is MCP
            or "stream" in path.lower()
            or (body is not None and b'"stream"' in body)
        )
        info: RequestInfo | None = None
        if must_parse:
            info = (
                provider.parse_request(endpoint, path, body)
                if body is not None
                else RequestInfo(
                    provider=provider.name,
                    endpoint=endpoint,
                    parse_error="undecodable request body",
                )
            )
        call = Call(
            key=ids.event_id(),
            provider=provider,
            endpoint=endpoint,
            identity=identity,
            session_id=session_id,
            started=req.timestamp_start,
            request_bytes=len(raw),
            info=info,
        )
        self._calls[flow.id] = call
        # Serializable breadcrumbs: a capture (``-w``) of this proxy can be replayed as itself.
        flow.metadata["govrix"] = {
            "agent_id": identity.agent_id,
            "agent_name": identity.name,
            "identity_kind": identity.kind,
            "session_id": session_id,
            "host": host,
            "request_event_id": call.key,
        }

        verdict = ALLOW if self.replay else self.agents.decide(identity.agent_id)
        if verdict != ALLOW:
            self._refuse(flow, call, path, body, verdict)
            return call

        findings: list[pii.Finding] | None = None
        if provider is MCP and body is not None:
            self._score_mcp(call, body, host, req.port)

        if policies:
            assert info is not None
            findings = pii.scan_segments(info.text) if s.pii_scan and info.text else []
            decision = self.policies.evaluate(
                self._policy_context(call, info, "request", findings, info.estimated_prompt_tokens)
            )
            call.compliance_tag = decision.compliance_tag
            note_decision(call.policy_decisions, "request", decision)
            if decision.block is not None:
                rule = decision.block.rule
                message = decision.block.message or f"blocked by policy rule {rule}"
                self._deny(
                    flow,
                    call,
                    path,
                    body,
                    403,
                    "policy_blocked",
                    message,
                    extra={"rule": rule},
                    findings=findings,
                )
                return call
            if decision.redact and findings and body is not None:
                body = self._redact(req, body, call)

        if has_budget and not self._reserve(flow, call, path, body, needs_usd, findings):
            return call

        if info is not None and info.stream and body is not None:
            new_body = provider.inject_stream_usage(endpoint, body)
            if new_body is not None:
                req.content = new_body
                body = new_body

        up = s.upstreams.get(provider.name)
        if up is not None and not self.replay:
            req.scheme, req.host, req.port = up.scheme, up.host, up.port
            if up.path_prefix:
                req.path = up.path_prefix + req.path

        metrics.child(metrics.REQUESTS, provider.name, "forwarded").inc()
        self._begin(call, path, body, encoding, findings)
        return call

    def _begin(
        self,
        call: Call,
        path: str,
        body: bytes | None,
        encoding: str | None,
        findings: list[pii.Finding] | None,
        *,
        status_code: int | None = None,
        error: str | None = None,
    ) -> None:
        """Hand the request over to the recorder (it becomes the request event)."""
        assert self.sink is not None
        ident = call.identity
        self.sink.send(
            Begin(
                key=call.key,
                provider=call.provider.name,
                endpoint=call.endpoint,
                path=path,
                agent_id=ident.agent_id,
                agent_name=ident.name,
                identity_kind=ident.kind,
                source_ip=ident.source_ip,
                session_id=call.session_id,
                started=call.started,
                body=body,
                encoding=encoding,
                request_bytes=call.request_bytes,
                compliance_tag=call.compliance_tag,
                policy_decisions=call.policy_decisions,
                findings=findings,
                tool_name=call.tool_name,
                risk=summary(call.risk) if call.risk is not None else None,
                status_code=status_code,
                error=error,
                reserved=call.reserved,
            )
        )

    def _refuse(
        self, flow: http.HTTPFlow, call: Call, path: str, body: bytes | None, verdict: str
    ) -> None:
        name = call.identity.name
        if verdict == BLOCKED:
            message = f"agent {name} is blocked by governance policy"
            self._deny(flow, call, path, body, 403, "agent_blocked", message)
        elif verdict == RETIRED:
            self._deny(flow, call, path, body, 403, "agent_retired", f"agent {name} is retired")
        else:
            assert verdict == UNAVAILABLE
            msg = "the agent table is not available and fail_mode is fail_closed"
            self._deny(flow, call, path, body, 503, "governance_unavailable", msg)

    def _deny(
        self,
        flow: http.HTTPFlow,
        call: Call,
        path: str,
        body: bytes | None,
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
        doc: dict[str, Any] = {
            "error": code,
            "message": message,
            "agent_id": call.identity.agent_id,
        }
        doc |= extra or {}
        if call.risk is not None:
            doc |= {"risk_level": call.risk.risk_level, "score": call.risk.score}
        hdrs = {"content-type": "application/json", "x-govrix-decision": code} | (headers or {})
        if call.provider is MCP:
            flow.response = http.Response.make(200, rpc_error(call.rpc_id, message, doc), hdrs)
        else:
            flow.response = http.Response.make(status, _json.encode(doc), hdrs)
        metrics.child(metrics.REQUESTS, call.provider.name, code).inc()
        call.done = True
        self._calls.pop(flow.id, None)
        self._begin(call, path, body, None, findings, status_code=status, error=code)

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
                event_id=call.key,
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
        assert self.sink is not None
        row = score_row(self.settings.proxy_customer_id, event, result)
        self.sink.send(
            Score(call.identity.agent_id, event.action, list(row.action), list(row.score))
        )

    def _reserve(
        self,
        flow: http.HTTPFlow,
        call: Call,
        path: str,
        body: bytes | None,
        needs_usd: bool,
        findings: list[pii.Finding] | None,
    ) -> bool:
        """Reserve the call's estimated usage against its budgets, or answer 429."""
        assert self.settings is not None and call.info is not None
        agent = call.identity
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
                path,
                body,
                429,
                "budget_exceeded",
                message,
                extra={"budget": spec.describe() | {"used": res.used}},
                headers={"retry-after": str(res.retry_after)},
                findings=findings,
            )
            return False
        if res.keys:
            self._reservations[call.key] = res
            call.reserved = True
        return True

    def _policy_context(
        self,
        call: Call,
        info: RequestInfo,
        direction: str,
        findings: list[pii.Finding],
        tokens: int | None,
    ) -> PolicyContext:
        return policy_context(
            agent_id=call.identity.agent_id,
            agent_name=call.identity.name,
            info=info,
            provider=call.provider.name,
            endpoint=call.endpoint,
            direction=direction,
            findings=findings,
            tokens=tokens,
            cost=None,
            tool_name=call.tool_name,
            risk_level=call.risk.risk_level if call.risk is not None else None,
        )

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

    # -- response -------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self._calls.get(flow.id)
        if call is None or call.done or flow.response is None:
            return
        t0 = time.perf_counter()
        try:
            resp = flow.response
            call.content_type, call.encoding = _body_headers(resp.headers.fields)
            ctype = call.content_type.split(";", 1)[0].strip().lower()
            stream_request = call.info is not None and call.info.stream
            if ctype in STREAM_TYPES or (stream_request and 200 <= resp.status_code < 300):
                assert self.sink is not None
                self.sink.send(Stream(call.key, ctype, call.encoding))
                call.streamed = True
                resp.stream = Tee(call, self.sink)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "responseheaders").inc()
            log.exception("responseheaders hook failed")
        call.hook_seconds += time.perf_counter() - t0

    def response(self, flow: http.HTTPFlow) -> None:
        call = self._calls.pop(flow.id, None)
        if call is None or call.done:
            return
        t0 = time.perf_counter()
        try:
            self._end(flow, call, error=None)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "response").inc()
            log.exception("response hook failed")
        call.hook_seconds += time.perf_counter() - t0
        metrics.ADDED_LATENCY.observe(call.hook_seconds)

    def error(self, flow: http.HTTPFlow) -> None:
        """Upstream failure or a client that went away mid-stream: still one response event."""
        call = self._calls.pop(flow.id, None)
        if call is None or call.done:
            return
        try:
            self._end(flow, call, error=flow.error.msg if flow.error else "flow error")
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "error").inc()
            log.exception("error hook failed")

    def _end(self, flow: http.HTTPFlow, call: Call, *, error: str | None) -> None:
        """Hand the response (or the error) over to the recorder."""
        call.done = True
        assert self.sink is not None
        resp = flow.response
        if resp is not None and not call.content_type and call.encoding is None:
            # no responseheaders hook ran (offline replay, a response made by another addon)
            call.content_type, call.encoding = _body_headers(resp.headers.fields)
        body: bytes | None = None
        if call.streamed:
            body = b"".join(call.chunks)
            call.chunks.clear()
            size = call.response_bytes
        elif resp is not None and error is None:
            body = resp.raw_content or b""
            size = len(body)
        else:
            size = call.response_bytes
        end = (resp.timestamp_end if resp is not None else None) or time.time()
        self.sink.send(
            End(
                key=call.key,
                status_code=resp.status_code if resp is not None else None,
                content_type=call.content_type,
                encoding=call.encoding,
                body=body,
                response_bytes=size,
                first_byte=call.first_byte,
                response_start=resp.timestamp_start if resp is not None else None,
                end=end,
                error=error,
            )
        )

    # -- agents ---------------------------------------------------------------------------------

    def _sight(self, identity: Identity, now: float) -> None:
        """Register an agent on first sight, and refresh last_seen_at at most once a minute."""
        last = self._sighted.get(identity.agent_id)
        if last is not None and now - last < 60:
            return
        self._sighted[identity.agent_id] = now
        if not self.agents.known(identity.agent_id):
            self.agents.set_local(identity.agent_id, "active")
        if self.sink is not None:
            self.sink.send(
                Sight(identity.agent_id, identity.name, identity.source_ip, identity.kind, _ts(now))
            )


def _host_name(authority: str | None) -> str | None:
    """The host of a plain ``name[:port]`` Host header, as ``Request.pretty_host`` reads it
    (lowercased later by detect); None for what needs its full parser (IPv6, IDNA, none)."""
    if not authority or "[" in authority or "xn--" in authority or not authority.isascii():
        return None
    name, sep, port = authority.rpartition(":")
    if not sep:
        return authority
    return name if port.isdigit() and ":" not in name else None


def _body_headers(fields: tuple[tuple[bytes, bytes], ...]) -> tuple[str, str | None]:
    """Content-Type ("" when absent) and Content-Encoding of a message, in one pass; repeated
    fields are joined with ", " as ``Headers.get`` does."""
    ctype: list[str] = []
    encoding: list[str] = []
    for name, value in fields:
        low = name.lower()
        if low == b"content-type":
            ctype.append(value.decode("utf-8", "surrogateescape"))
        elif low == b"content-encoding":
            encoding.append(value.decode("utf-8", "surrogateescape"))
    return ", ".join(ctype), ", ".join(encoding) or None


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
