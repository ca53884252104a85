"""The Govrix mitmproxy addon: the conductor of the hot path (DESIGN.md §4).

Per request it runs the gates of ``addon/gates/`` in order (identify, kill switch, route, parse,
score, budget, policy, pii), answers the first refusal (``addon/refusals.py``) or forwards, and
hands raw captures (``addon/wire.py``) to the recorder through ``addon/supervisor.py``; on the
response side it tees streams (``addon/tee.py``) and hands the response over. Rules it keeps:

- No database or network I/O in a hook: state is in memory, captures leave through a pipe.
- No input skips a gate or an event: parsing never raises; a gate that needs a body it cannot read
  applies ``GOVRIX_UNPARSEABLE``; a gate that raises applies ``GOVRIX_GATE_ERRORS``; every call an
  identified agent makes (forwarded or refused, any host) produces a request event, and every
  forwarded one a response event (``aborted`` when the proxy stops first).
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
from datetime import UTC, datetime
from typing import Any

from mitmproxy import ctx, http

from addon import config as config_mod
from addon import ids, metrics, refusals
from addon.agents import AgentTable
from addon.budgets import Budgets, Reservation
from addon.call import Call, storable
from addon.gates import Gate, Hold
from addon.gates.budget import BudgetGate
from addon.gates.killswitch import KillSwitch
from addon.gates.parse import parse
from addon.gates.pii import PiiGate
from addon.gates.policy import PolicyGate
from addon.gates.score import ScoreMcp
from addon.identity import (
    Identifier,
    Identity,
    Sessions,
    parse_proxy_authorization,
    scan_headers,
    vendor_session,
)
from addon.mcp import InlineScorer
from addon.policy import PolicyError, PolicyStore, watch
from addon.refusals import Refusal
from addon.route import MCP_CALL, OTHER, Route, Router, host_port
from addon.supervisor import Supervisor
from addon.tee import Tee, body_headers, decoded_content, is_streamed
from addon.wire import UNKNOWN_USAGE, AgentSeen, Settle, Stream, ToolHistory, ToProxy
from api.scoring import Engine

log = logging.getLogger("govrix.proxy")


class Govrix:
    """The addon. ``settings`` may be given directly (tests, offline replay)."""

    def __init__(
        self,
        settings: config_mod.Settings | None = None,
        *,
        replay: bool = False,
        recorder: Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.replay = replay
        #: Where captures go; tests hand in their own (anything with Supervisor's interface).
        self.recorder: Supervisor | None = recorder
        self.agents: AgentTable = AgentTable(None)
        self.budgets: Budgets = Budgets(None)
        self.policies: PolicyStore = PolicyStore()
        self._policy_task: Any = None
        self.scorer: InlineScorer | None = None
        self.identifier: Identifier | None = None
        self.router: Router | None = None
        self.sessions = Sessions()
        self.killswitch = KillSwitch(self.agents)
        self.gates: list[Gate] = []
        self.budget_gate: BudgetGate | None = None
        self.policy_gate: PolicyGate | None = None
        self._conn_users: dict[str, tuple[str, str]] = {}
        self._calls: dict[str, Call] = {}
        #: Reservations by request event id, waiting for the recorder's ``Settle``.
        self._reservations: dict[str, Reservation] = {}
        self._sighted: dict[str, float] = {}
        self._held: set[asyncio.Task[None]] = set()  # calls waiting for budget room
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
        except config_mod.ConfigError as e:
            raise exceptions.OptionsError(str(e)) from e  # type: ignore[no-untyped-call]
        self.router = None  # compatible hosts may have changed
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
        self.router = Router(s.openai_compatible_hosts)
        self.sessions = Sessions(s.session_idle_seconds)
        if self.recorder is None:
            self.recorder = Supervisor(
                s,
                on_reply=self._on_reply,
                on_lost=self._settle_lost,
                scorer=self.scorer,
                policies=self.policies,
                config_file=self._config_file,
                replay=self.replay,
            ).start()
        url = self.recorder.database_url
        if not self.replay:
            self.agents = AgentTable(url, fail_mode=s.fail_mode).start()
            self.budgets = Budgets(
                url,
                configured=s.budgets,
                unpriced="allow" if s.budget_unpriced == "allow" else "refuse",
            ).start()
            self._export_metrics()
            with contextlib.suppress(OSError):
                metrics.serve(s.metrics_port)
        self.killswitch = KillSwitch(self.agents)
        self.budget_gate = BudgetGate(
            self.budgets,
            default_completion=s.default_completion_tokens,
            unparseable=s.unparseable,
            wait=s.budget_wait,
        )
        self.policy_gate = PolicyGate(self.policies, pii_scan=s.pii_scan, unparseable=s.unparseable)
        score = ScoreMcp(self.scorer, s.mcp_servers, s.proxy_customer_id, self.recorder.send)
        self.gates = [score, self.budget_gate, self.policy_gate, PiiGate()]
        log.info("govrix addon running (recorder: %s, spool %s)", self.recorder.mode, s.spool_dir)

    def done(self) -> None:
        if self.settings is not None and not self.replay:
            with contextlib.suppress(OSError):
                (self.settings.home / "proxy.pid").unlink(missing_ok=True)
        if self._policy_task is not None:
            self._policy_task.cancel()
        if self.recorder is not None:
            # Calls still in flight are recorded as aborted before the recorder drains.
            for call in list(self._calls.values()):
                if call.done:
                    continue
                with contextlib.suppress(Exception):
                    if call.held:  # never forwarded: waiting for budget room when we stopped
                        self._begin(call, status_code=503, error="aborted")
                    else:
                        self.finish(None, call, error="aborted")
            self._calls.clear()
            self.recorder.close()  # settlements still arrive here: budgets stop after
        self.agents.stop()
        self.budgets.stop()

    def _export_metrics(self) -> None:
        metrics.LIVE.gauges["govrix_agent_table_live"] = (
            "1 when the agent table listener is connected.",
            lambda: float(self.agents.live),
        )
        metrics.LIVE.gauges["govrix_budgets_loaded"] = (
            "1 once the budget limits and usage have been read from PostgreSQL.",
            lambda: float(self.budgets.loaded),
        )
        if self.recorder is not None:
            self.recorder.export_metrics()

    # -- the recorder's answers -------------------------------------------------------------------

    def _on_reply(self, msg: ToProxy) -> None:
        if isinstance(msg, Settle):
            res = self._reservations.pop(msg.request_id, None)
            if res is None:
                return
            if msg.tokens == UNKNOWN_USAGE:
                self.budgets.settle(res, res.tokens, res.usd)
            else:
                self.budgets.settle(res, msg.tokens, msg.usd)
        elif isinstance(msg, ToolHistory) and self.scorer is not None:
            if self.recorder is not None and self.recorder.inline:
                return  # the recorder shares our scorer: it has remembered them already
            for action in msg.actions:
                self.scorer.remember(msg.agent_id, action)

    def _settle_lost(self, keys: list[str]) -> None:
        """Calls whose End died with a recorder: settle their reservations at the bound."""
        for key in keys:
            res = self._reservations.pop(key, None)
            if res is not None:
                self.budgets.settle(res, res.tokens, res.usd)

    # -- CONNECT: the tunnel names the agent -------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        creds = parse_proxy_authorization(flow.request.headers.get("proxy-authorization"))
        s = self.settings
        if (
            s is not None
            and s.proxy_token is not None
            and (creds is None or creds[1] != s.proxy_token)
        ):
            flow.response = refusals.response(refusals.proxy_auth_required(), agent_id=None)
            return
        if creds is None:
            return
        self._conn_users[flow.client_conn.id] = creds
        if self.replay or self.identifier is None:
            return
        # Proxy credentials are the first identity source: a request inside this tunnel can only
        # be this agent, so a blocked agent is refused before its TLS handshake.
        try:
            identity = self.identifier.identify(lambda _: None, creds[0], _peer(flow))
            refusal = self.killswitch.check(identity)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "http_connect").inc()
            log.exception("kill switch at CONNECT failed; the requests inside are checked")
            return
        # Blocked and retired are final: the tunnel is refused, so hosts we cannot intercept
        # (pinned certificates, passthrough) are closed too. A table not yet loaded is answered
        # per request inside the tunnel, where the agent can read the JSON body.
        if refusal is not None and refusal.status == 403:
            self._refuse_connect(flow, identity, refusal)

    def _refuse_connect(self, flow: http.HTTPFlow, identity: Identity, refusal: Refusal) -> None:
        req = flow.request
        host = storable(req.host.lower())
        route = Route(OTHER, None, f"{host}:{req.port}", host, req.port, "")
        call = self._new_call(flow, identity, route, vendor_session(lambda _: None))
        self._refuse(flow, call, refusal)

    def forget(self, flow: http.HTTPFlow) -> None:
        """Drop the state of a flow that will see no response hook (offline replay)."""
        self._calls.pop(flow.id, None)

    def client_disconnected(self, client: Any) -> None:
        self._conn_users.pop(client.id, None)

    # -- request --------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None or not (flow.live or self.replay):
            return
        t0 = time.perf_counter()
        try:
            self.enforce(flow)
        except Exception:
            # enforce() records and enforces on its own; this is the net under the net.
            metrics.child(metrics.HOOK_ERRORS, "request").inc()
            log.exception("request hook failed")
            self._fail_closed(flow)
        call = self._calls.get(flow.id)
        if call is not None:
            call.hook_seconds += time.perf_counter() - t0

    def _fail_closed(self, flow: http.HTTPFlow) -> None:
        """After a failure of our own: refuse (``GOVRIX_GATE_ERRORS=refuse``) or forward, and
        either way record the call if it was not yet."""
        s = self.settings
        refuse = s is None or s.gate_errors == "refuse"
        call = self._calls.get(flow.id)
        try:
            if call is not None and not call.begun:
                if refuse:
                    self._refuse(flow, call, refusals.gate_failed("request"))
                else:
                    call.policy_decisions.append(
                        {"phase": "request", "gate": "request", "error": "exception"}
                    )
                    self._begin(call)
                return
        except Exception:
            log.exception("recording a failed request failed")
        if refuse and flow.response is None and flow.intercepted is False:
            flow.response = refusals.response(refusals.gate_failed("request"), agent_id=None)

    def enforce(self, flow: http.HTTPFlow) -> Call | None:
        """Run the gates; the call once it is recorded (forwarded or refused)."""
        s = self.settings
        assert s is not None and self.identifier is not None and self.router is not None
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
            flow.response = refusals.response(refusals.proxy_auth_required(), agent_id=None)
            return None
        if kept is not None:
            req.headers.fields = kept

        # 1. identify (Gemini's API key may travel in the query: it needs the provider).
        host, port, path, found = self._target(req, get)
        identity = self._identify(flow, get, creds, found)
        route = self._route(req, host, port, path, found)
        call = self._new_call(flow, identity, route, vendor_session(get))

        # 2. kill switch: the agent's status alone, whatever the host, method or bytes.
        refusal = None if self.replay else self._killswitch(call)
        if refusal is not None:
            self._refuse(flow, call, refusal)
            return call
        if route.kind == OTHER:
            self._forward_other(flow, call)
            return call

        # 3-4. the body, and its parse when a gate or streaming needs it.
        raw = req.raw_content or b""
        call.body = decoded_content(req) if get("content-encoding") else raw
        if self._must_parse(call, raw):
            try:
                parse(call, path)
            except Exception:  # parse() cannot raise; a bug must not skip what follows
                metrics.child(metrics.HOOK_ERRORS, "parse").inc()
                log.exception("request parse failed")
        # 5-8. score, budget, policy, pii; then forward.
        self._gates_from(0, flow, call, path)
        return call

    def _gates_from(self, first: int, flow: http.HTTPFlow, call: Call, path: str) -> None:
        for i in range(first, len(self.gates)):
            gate = self.gates[i]
            answer = self._run(gate.name, call, flow, gate)
            if isinstance(answer, Hold):
                if self._hold(i, flow, call, path, answer):
                    return
                answer = answer.now
            if answer is not None:
                self._refuse(flow, call, answer)
                return
        self._forward(flow, call, path)

    def _hold(self, i: int, flow: http.HTTPFlow, call: Call, path: str, hold: Hold) -> bool:
        """Let the call wait in a task (the flow intercepted, the loop free); False: cannot."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self.replay or not flow.live:
            return False
        call.held = True
        flow.intercept()  # type: ignore[no-untyped-call]
        task = loop.create_task(self._resume(i, flow, call, path, hold), name="govrix-hold")
        self._held.add(task)
        task.add_done_callback(self._held.discard)
        return True

    async def _resume(self, i: int, flow: http.HTTPFlow, call: Call, path: str, hold: Hold) -> None:
        t0 = 0.0
        try:
            try:
                answer = await hold.until()
            except Exception:
                answer = self._gate_error(self.gates[i].name, call)
            t0 = time.perf_counter()
            call.held = False
            if flow.error is not None:  # the client went away while it waited
                self._refuse(flow, call, refusals.client_closed())
            elif answer is not None:
                self._refuse(flow, call, answer)
            else:
                self._gates_from(i + 1, flow, call, path)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "request").inc()
            log.exception("request hook failed after a wait")
            self._fail_closed(flow)
        finally:
            call.hook_seconds += time.perf_counter() - t0 if t0 else 0.0
            if flow.intercepted:
                flow.resume()  # type: ignore[no-untyped-call]

    def _killswitch(self, call: Call) -> Refusal | None:
        try:
            return self.killswitch.check(call.identity)
        except Exception:
            return self._gate_error(self.killswitch.name, call)

    def _run(self, name: str, call: Call, flow: http.HTTPFlow, gate: Gate) -> Refusal | Hold | None:
        """One gate; if it raises, ``GOVRIX_GATE_ERRORS`` decides (never silently open)."""
        try:
            return gate(call, flow)
        except Exception:
            return self._gate_error(name, call)

    def _gate_error(self, name: str, call: Call) -> Refusal | None:
        metrics.child(metrics.HOOK_ERRORS, name).inc()
        log.exception("the %s gate failed", name)
        call.policy_decisions.append({"phase": "request", "gate": name, "error": "exception"})
        assert self.settings is not None
        if self.settings.gate_errors == "refuse":
            return refusals.gate_failed(name)
        return None

    def _target(self, req: http.Request, get: Any) -> tuple[str, int, str, tuple[Any, str] | None]:
        assert self.router is not None
        try:
            host, port, path = self.router.target(req, get)
            host, path = storable(host), storable(path)
            found = self.router.detect(host_port(host, port), path)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "route").inc()
            log.exception("request target unreadable: routed as another host")
            return storable(str(req.host)), int(req.port), "", None
        return host, port, path, found

    def _identify(
        self,
        flow: http.HTTPFlow,
        get: Any,
        creds: tuple[str, str] | None,
        found: tuple[Any, str] | None,
    ) -> Identity:
        """Who is calling; falls back to the source IP rather than fail."""
        assert self.identifier is not None
        peer = _peer(flow)
        try:
            query_key = (
                flow.request.query.get("key")
                if found is not None and found[0].name in ("gemini", "vertex")
                else None
            )
            return self.identifier.identify(get, creds[0] if creds else None, peer, query_key)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "identify").inc()
            log.exception("identity headers unreadable: identified by source address")
            return self.identifier.identify(lambda _: None, None, peer)

    def _route(
        self, req: http.Request, host: str, port: int, path: str, found: tuple[Any, str] | None
    ) -> Route:
        assert self.router is not None
        try:
            return self.router.route(req, host, port, path, found)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "route").inc()
            log.exception("routing failed: routed as another host")
            return Route(OTHER, None, path, host, port, path)

    def _new_call(
        self, flow: http.HTTPFlow, identity: Identity, route: Route, explicit_session: str | None
    ) -> Call:
        req = flow.request
        started = req.timestamp_start
        session_id, _ = self.sessions.resolve(identity.agent_id, time.monotonic(), explicit_session)
        self._sight(identity, started)
        call = Call(
            request_id=ids.event_id(),
            identity=identity,
            session_id=session_id,
            started=started,
            method=storable(req.method),
            route=route,
            request_bytes=len(req.raw_content or b""),
        )
        self._calls[flow.id] = call
        # Serializable breadcrumbs: a capture (``-w``) of this proxy can be replayed as itself.
        flow.metadata["govrix"] = {
            "agent_id": identity.agent_id,
            "agent_name": identity.name,
            "identity_kind": identity.kind,
            "session_id": session_id,
            "host": route.host,
            "request_event_id": call.request_id,
        }
        return call

    def _must_parse(self, call: Call, raw: bytes) -> bool:
        """Parse inline only what enforcement or streaming needs; the recorder parses the rest."""
        if self.replay:
            return False
        assert self.budget_gate is not None and self.policy_gate is not None
        return (
            call.route.kind == MCP_CALL
            or self.policy_gate.active()
            or self.budget_gate.applies(call)
            or "stream" in call.route.path.lower()
            or b'"stream"' in raw
        )

    def _forward(self, flow: http.HTTPFlow, call: Call, path: str) -> None:
        assert self.settings is not None
        req = flow.request
        info, provider = call.info, call.route.provider
        assert provider is not None
        if info is not None and info.stream and call.body is not None:
            with contextlib.suppress(Exception):  # best effort: usage is estimated otherwise
                new_body = provider.inject_stream_usage(call.route.endpoint, call.body)
                if new_body is not None:
                    req.content = new_body
                    call.body = new_body
        up = self.settings.upstreams.get(provider.name)
        if up is not None and not self.replay:
            req.scheme, req.host, req.port = up.scheme, up.host, up.port
            if up.path_prefix:
                req.path = up.path_prefix + req.path
        if call.reservation is not None:
            self._reservations[call.request_id] = call.reservation
        metrics.child(metrics.REQUESTS, provider.name, "forwarded").inc()
        self._begin(call)

    def _forward_other(self, flow: http.HTTPFlow, call: Call) -> None:
        """A host that is neither an LLM provider nor MCP: recorded as metadata, or not at all."""
        assert self.settings is not None
        metrics.child(metrics.REQUESTS, OTHER, "forwarded").inc()
        if self.settings.record_other_hosts:
            self._begin(call)
        else:
            self._calls.pop(flow.id, None)
            call.done = True

    def _refuse(self, flow: http.HTTPFlow, call: Call, refusal: Refusal) -> None:
        """Answer instead of the upstream and record the refused request."""
        if self.budget_gate is not None:
            self.budget_gate.release(call)
        risk = (call.risk.risk_level, call.risk.score) if call.risk is not None else None
        flow.response = refusals.response(
            refusal,
            agent_id=call.identity.agent_id,
            rpc=call.route.kind == MCP_CALL,
            rpc_id=call.rpc_id,
            risk=risk,
        )
        metrics.child(metrics.REQUESTS, call.route.provider_name, refusal.code).inc()
        call.done = True
        self._calls.pop(flow.id, None)
        self._begin(call, status_code=refusal.status, error=refusal.code)

    def _begin(
        self, call: Call, *, status_code: int | None = None, error: str | None = None
    ) -> None:
        """Hand the request over to the recorder (it becomes the request event)."""
        assert self.recorder is not None
        call.begun = True
        reserved = call.request_id in self._reservations
        try:
            self.recorder.send(call.begin(status_code, error, reserved=reserved))
        except Exception:
            # A value our pipe cannot carry: the event still exists, with what is certain.
            metrics.child(metrics.HOOK_ERRORS, "capture").inc()
            log.exception("capture of %s failed; recording its metadata only", call.request_id)
            self.recorder.send(
                call.begin(status_code, error or "capture_failed", reserved=reserved, bare=True)
            )

    # -- response -------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self._calls.get(flow.id)
        if call is None or call.done or flow.response is None:
            return
        t0 = time.perf_counter()
        try:
            resp = flow.response
            call.status_code = resp.status_code
            call.content_type, call.encoding = body_headers(resp.headers.fields)
            if call.route.kind == OTHER:
                resp.stream = Tee(call, None)  # bytes counted, never copied nor buffered
                call.streamed = True
            else:
                stream_request = call.info is not None and call.info.stream
                if is_streamed(call.content_type, stream_request, resp.status_code):
                    assert self.recorder is not None
                    ctype = call.content_type.split(";", 1)[0].strip().lower()
                    self.recorder.send(Stream(call.request_id, ctype, call.encoding))
                    call.streamed = True
                    resp.stream = Tee(call, self.recorder)
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
            self.finish(flow, call, error=None)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "response").inc()
            log.exception("response hook failed")
        call.hook_seconds += time.perf_counter() - t0
        metrics.ADDED_LATENCY.observe(call.hook_seconds)

    def error(self, flow: http.HTTPFlow) -> None:
        """Upstream failure or a client that went away mid-stream: still one response event."""
        call = self._calls.get(flow.id)
        if call is None or call.done or call.held:
            return  # (a call waiting for budget room is recorded by its task)
        self._calls.pop(flow.id, None)
        try:
            self.finish(flow, call, error=storable(flow.error.msg) if flow.error else "flow error")
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "error").inc()
            log.exception("error hook failed")

    def finish(self, flow: http.HTTPFlow | None, call: Call, *, error: str | None) -> None:
        """Hand the response (or the error; ``flow`` None: the proxy is stopping) over."""
        call.done = True
        assert self.recorder is not None
        self.recorder.send(call.end(flow.response if flow is not None else None, error))

    # -- agents ---------------------------------------------------------------------------------

    def _sight(self, identity: Identity, now: float) -> None:
        """Register an agent on first sight, and refresh last_seen_at at most once a minute."""
        last = self._sighted.get(identity.agent_id)
        if last is not None and now - last < 60:
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
                    _ts(now),
                )
            )


def _peer(flow: http.HTTPFlow) -> str | None:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else None


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
