"""The gates of ``addon/gates/`` run in order over one call, and what waiting for one means.

The answer is the first refusal, or None (forward). A gate may answer :class:`Hold` ("not yet":
the budget gate's wait for room held by calls in flight): the flow is intercepted, the wait runs
in a task (the event loop stays free), and :meth:`Pipeline.run` answers the ``Hold`` itself to
say so; once the wait answers, the task goes on from the next gate and hands the answer to the
conductor's ``conclude`` (``fail_closed`` if that breaks). Where nothing can wait (no running
event loop: tests, offline replay; a flow that is not live) the hold's ``now`` answer stands. A
gate that raises applies ``GOVRIX_GATE_ERRORS`` (:meth:`Pipeline.gate_error`): refused, or
forwarded with the error in its decisions, never silently open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mitmproxy import http

from addon import metrics, refusals
from addon.call import Call
from addon.gates import Gate, Hold
from addon.refusals import Refusal

log = logging.getLogger("govrix.proxy")


class Pipeline:
    """``gates`` (the conductor's own list: what is inserted there runs) and the calls held.

    ``conclude(flow, call, answer)`` forwards (``answer`` None) or refuses a call that waited.
    """

    def __init__(
        self,
        gates: list[Gate],
        *,
        gate_errors: str,
        replay: bool,
        conclude: Callable[[http.HTTPFlow, Call, Refusal | None], None],
        fail_closed: Callable[[http.HTTPFlow], None],
    ) -> None:
        self.gates = gates
        self.gate_errors = gate_errors
        self.replay = replay
        self.conclude = conclude
        self.fail_closed = fail_closed
        self._held: set[asyncio.Task[None]] = set()  # calls waiting for budget room

    def run(self, flow: http.HTTPFlow, call: Call, first: int = 0) -> Refusal | Hold | None:
        """The gates from ``first`` on: the first refusal, None to forward, or the ``Hold`` the
        call now waits on (its task concludes it)."""
        gates = self.gates
        for i in range(first, len(gates)):
            gate = gates[i]
            answer = self.ask(gate.name, call, flow, gate)
            if isinstance(answer, Hold):
                if self._hold(i, flow, call, answer):
                    return answer
                answer = answer.now
            if answer is not None:
                return answer
        return None

    def ask(self, name: str, call: Call, flow: http.HTTPFlow, gate: Gate) -> Refusal | Hold | None:
        """One gate; if it raises, ``GOVRIX_GATE_ERRORS`` decides (never silently open)."""
        try:
            return gate(call, flow)
        except Exception:
            return self.gate_error(name, call)

    def gate_error(self, name: str, call: Call) -> Refusal | None:
        """A gate of ours raised (log it now): the refusal, or None to go on (``forward``)."""
        metrics.child(metrics.HOOK_ERRORS, name).inc()
        log.exception("the %s gate failed", name)
        call.policy_decisions.append({"phase": "request", "gate": name, "error": "exception"})
        if self.gate_errors == "refuse":
            return refusals.gate_failed(name)
        return None

    def _hold(self, i: int, flow: http.HTTPFlow, call: Call, hold: Hold) -> bool:
        """Let the call wait in a task (the flow intercepted, the loop free); False: cannot."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self.replay or not flow.live:
            return False
        call.held = True
        flow.intercept()  # type: ignore[no-untyped-call]
        task = loop.create_task(self._resume(i, flow, call, hold), name="govrix-hold")
        self._held.add(task)
        task.add_done_callback(self._held.discard)
        return True

    async def _resume(self, i: int, flow: http.HTTPFlow, call: Call, hold: Hold) -> None:
        t0 = 0.0
        try:
            try:
                answer = await hold.until()
            except Exception:
                answer = self.gate_error(self.gates[i].name, call)
            t0 = time.perf_counter()
            call.held = False
            if flow.error is not None:  # the client went away while it waited
                self.conclude(flow, call, refusals.client_closed())
            elif answer is not None:
                self.conclude(flow, call, answer)
            else:
                outcome = self.run(flow, call, i + 1)
                if not isinstance(outcome, Hold):  # (held again: that task concludes)
                    self.conclude(flow, call, outcome)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "request").inc()
            log.exception("request hook failed after a wait")
            self.fail_closed(flow)
        finally:
            call.hook_seconds += time.perf_counter() - t0 if t0 else 0.0
            if flow.intercepted:
                flow.resume()  # type: ignore[no-untyped-call]
