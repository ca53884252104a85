"""The Govrix mitmproxy addon: the conductor of the hot path (DESIGN.md §4).

Per request it runs the gates of ``addon/gates/`` in order: identify and route (``addon/intake.py``,
which opens the :class:`~addon.call.Call` and sights the agent, ``addon/sightings.py``), kill
switch, parse, then score, budget, policy and pii (``addon/pipeline.py``, which also parks a call
that waits for budget room); it answers the first refusal (``addon/refusals.py``) or forwards, and
hands raw captures (``addon/wire.py``) to the recorder through ``addon/supervisor.py``. On the
response side it tees streams (``addon/tee.py``) and hands the response over (``Call.end``).
This module keeps what must be methods of the one class mitmproxy loads (``addon/main.py``): the
hooks by their mitmproxy names, each with its guard, timing and error net; the lifecycle; the
table of calls in flight and their reservations awaiting the recorder's ``Settle``. That is why it
is longer than the house's 400 lines. Rules it keeps:

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
from typing import Any

from mitmproxy import ctx, http

from addon import config as config_mod
from addon import metrics, refusals, tee
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
from addon.identity import Identifier, Identity, Sessions, parse_proxy_authorization, scan_headers
from addon.intake import Intake
from addon.mcp import InlineScorer
from addon.pipeline import Pipeline
from addon.policy import PolicyError, PolicyStore, watch
from addon.policy.sync import PolicySync
from addon.policy.sync import export_metrics as export_policy_metrics
from addon.refusals import Refusal
from addon.route import MCP_CALL, OTHER, Router
from addon.sightings import Sightings
from addon.supervisor import Supervisor
from addon.tee import decoded_content
from addon.wire import UNKNOWN_USAGE, Settle, ToolHistory, ToolOutput, ToProxy
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
        #: Applies the newest policy version from PostgreSQL; publishes the policy file there.
        self.policy_sync: PolicySync | None = None
        self.scorer: InlineScorer | None = None
        #: Steps 1 and 3 (who, where) and the call they open; made in ``start``.
        self.intake: Intake | None = None
        self.killswitch = KillSwitch(self.agents)
        #: Steps 5-8, run by ``pipeline`` (the same list: a gate inserted here runs).
        self.gates: list[Gate] = []
        self.pipeline: Pipeline | None = None
        self.budget_gate: BudgetGate | None = None
        self.policy_gate: PolicyGate | None = None
        self._conn_users: dict[str, tuple[str, str]] = {}
        self._calls: dict[str, Call] = {}
        #: Reservations by request event id, waiting for the recorder's ``Settle``.
        self._reservations: dict[str, Reservation] = {}
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
        if self.intake is not None:  # reconfigured while running: compatible hosts may have changed
            self.intake.router = Router(self.settings.openai_compatible_hosts)
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
        """``$GOVRIX_HOME/proxy.pid`` (``proxy-N.pid`` for worker N) once the addon runs: a
        readiness signal for scripts."""
        if self.settings is None or self.replay:
            return
        with contextlib.suppress(OSError):
            path = self.settings.pid_file
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
        self.scorer = InlineScorer(Engine.load(internal_domains=s.internal_domains))
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
            if url:
                self.policy_sync = PolicySync(self.policies, url).start()
            self._export_metrics()
            with contextlib.suppress(OSError):
                metrics.serve(s.metrics_port, s.metrics_host)
        self.intake = Intake(
            Identifier(s.identity_secret),
            Router(s.openai_compatible_hosts),
            Sessions(s.session_idle_seconds),
            Sightings(self.agents, self.recorder),
        )
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
        self.pipeline = Pipeline(
            self.gates,
            gate_errors=s.gate_errors,
            replay=self.replay,
            conclude=self._conclude,
            fail_closed=self._fail_closed,
        )
        log.info(
            "govrix addon running (recorder: %s, spool %s, policy: %s)",
            self.recorder.mode,
            s.spool_dir,
            self.policies.active.describe(),
        )

    def done(self) -> None:
        if self.settings is not None and not self.replay:
            with contextlib.suppress(OSError):
                self.settings.pid_file.unlink(missing_ok=True)
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
        if self.policy_sync is not None:
            self.policy_sync.stop()

    def _export_metrics(self) -> None:
        metrics.LIVE.gauges["govrix_agent_table_live"] = (
            "1 when the agent table listener is connected.",
            lambda: float(self.agents.live),
        )
        metrics.LIVE.gauges["govrix_budgets_loaded"] = (
            "1 once the budget limits and usage have been read from PostgreSQL.",
            lambda: float(self.budgets.loaded),
        )
        export_policy_metrics(metrics.LIVE, self.policies, self.policy_sync)
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
        elif isinstance(msg, ToolOutput) and self.scorer is not None:
            if self.recorder is not None and self.recorder.inline:
                return
            self.scorer.merge_tool_output(
                msg.agent_id, msg.session_id, msg.digests, msg.instruction
            )

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
        if self.replay or self.intake is None:
            return
        # Proxy credentials are the first identity source: a request inside this tunnel can only
        # be this agent, so a blocked agent is refused before its TLS handshake.
        try:
            identity = self.intake.identify_tunnel(flow, creds[0])
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
        assert self.intake is not None
        call = self._calls[flow.id] = self.intake.open_tunnel(flow, identity)
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
        assert s is not None and self.intake is not None and self.pipeline is not None
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

        # 1 and 3. who is calling, and where to (``addon/intake.py``).
        call = self._calls[flow.id] = self.intake.open(flow, get, creds)

        # 2. kill switch: the agent's status alone, whatever the host, method or bytes.
        refusal = None if self.replay else self._killswitch(call)
        if refusal is not None:
            self._refuse(flow, call, refusal)
            return call
        if call.route.kind == OTHER:
            self._forward_other(flow, call)
            return call

        # 3-4. the body, and its parse when a gate or streaming needs it.
        raw = req.raw_content or b""
        call.body = decoded_content(req) if get("content-encoding") else raw
        if self._must_parse(call, raw):
            try:
                parse(call, call.route.path)
            except Exception:  # parse() cannot raise; a bug must not skip what follows
                metrics.child(metrics.HOOK_ERRORS, "parse").inc()
                log.exception("request parse failed")
        # 5-8. score, budget, policy, pii (``addon/pipeline.py``); then forward or refuse.
        answer = self.pipeline.run(flow, call)
        if answer is None:
            self._forward(flow, call)
        elif not isinstance(answer, Hold):  # (a call that waits is concluded by its task)
            self._refuse(flow, call, answer)
        return call

    def _conclude(self, flow: http.HTTPFlow, call: Call, answer: Refusal | None) -> None:
        """A call that waited for a gate's ``Hold``: forward it, or refuse it."""
        if answer is None:
            self._forward(flow, call)
        else:
            self._refuse(flow, call, answer)

    def _killswitch(self, call: Call) -> Refusal | None:
        try:
            return self.killswitch.check(call.identity)
        except Exception:
            assert self.pipeline is not None
            return self.pipeline.gate_error(self.killswitch.name, call)

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

    def _forward(self, flow: http.HTTPFlow, call: Call) -> None:
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
            tee.attach(call, flow.response, self.recorder)  # streaming on, or buffered
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
