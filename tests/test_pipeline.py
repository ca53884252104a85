"""The gate pipeline (``addon/pipeline.py``) and the agent sightings (``addon/sightings.py``) on
their own: a table of gates in, the answer out; waits concluded by their task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from addon.agents import AgentTable
from addon.call import Call
from addon.gates import Hold
from addon.identity import Identity
from addon.pipeline import Pipeline
from addon.refusals import Refusal
from addon.route import OTHER, Route
from addon.sightings import Sightings
from addon.wire import AgentSeen

NO = Refusal(403, "no", "no")
LATER = Refusal(429, "later", "later")
WHO = Identity("agt_1", "one", "header", "127.0.0.1")


class Answer:
    def __init__(self, name: str, answer: Refusal | Hold | Exception | None) -> None:
        self.name = name
        self.answer = answer
        self.asked = 0

    def __call__(self, call: Call, flow: http.HTTPFlow) -> Refusal | Hold | None:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def new_call() -> Call:
    route = Route(OTHER, None, "/", "example.com", 443, "/")
    return Call("evt_1", WHO, "ses_1", 0.0, "POST", route, 0)


def pipeline(gates: list[Any], concluded: list[Refusal | None], mode: str = "refuse") -> Pipeline:
    return Pipeline(
        gates,
        gate_errors=mode,
        replay=False,
        conclude=lambda _flow, _call, answer: concluded.append(answer),
        fail_closed=lambda _flow: concluded.append(Refusal(0, "fail_closed", "")),
    )


async def _none() -> Refusal | None:
    return None


@pytest.mark.parametrize(
    ("answers", "mode", "expected", "asked"),
    [
        ([None, None], "refuse", None, [1, 1]),
        ([NO, None], "refuse", "no", [1, 0]),
        ([None, NO], "refuse", "no", [1, 1]),
        ([RuntimeError("bug"), None], "refuse", "governance_error", [1, 0]),
        ([RuntimeError("bug"), None], "forward", None, [1, 1]),
        # no running event loop: the hold's ``now`` answer stands
        ([Hold(_none, LATER), None], "refuse", "later", [1, 0]),
    ],
)
def test_the_first_refusal_answers(
    answers: list[Any], mode: str, expected: str | None, asked: list[int]
) -> None:
    gates = [Answer(f"g{i}", a) for i, a in enumerate(answers)]
    call = new_call()
    answer = pipeline(gates, [], mode).run(tflow.tflow(), call)
    assert isinstance(answer, Refusal | None)
    assert (answer.code if answer is not None else None) == expected
    assert [g.asked for g in gates] == asked
    errors = [d for d in call.policy_decisions if d.get("error") == "exception"]
    assert len(errors) == sum(isinstance(a, Exception) for a in answers)


@pytest.mark.parametrize(("waited", "expected"), [(None, [None]), (NO, [NO])])
async def test_a_hold_waits_in_a_task_and_its_task_concludes(
    waited: Refusal | None, expected: list[Refusal | None]
) -> None:
    room = asyncio.Event()

    async def until() -> Refusal | None:
        await room.wait()
        return waited

    later = Answer("after", None)
    concluded: list[Refusal | None] = []
    f = tflow.tflow()
    f.live = True
    call = new_call()
    answer = pipeline([Answer("budget", Hold(until, LATER)), later], concluded).run(f, call)
    assert isinstance(answer, Hold) and f.intercepted and call.held and not concluded
    room.set()
    await asyncio.wait_for(f.wait_for_resume(), 5)
    assert concluded == expected and not call.held and not f.intercepted
    assert later.asked == (1 if waited is None else 0)


class ListRecorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


def test_an_agent_is_announced_once_a_minute() -> None:
    agents = AgentTable(None)
    rec = ListRecorder()
    sightings = Sightings(agents, rec)  # type: ignore[arg-type]
    for now in (1000.0, 1030.0, 1059.9, 1060.0, 1100.0):
        sightings.sight(WHO, now)
    assert [m.last_seen_at.timestamp() for m in rec.sent if isinstance(m, AgentSeen)] == [
        1000.0,
        1060.0,
    ]
    assert agents.known(WHO.agent_id)
