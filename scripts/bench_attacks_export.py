"""Export AgentDojo's ground-truth traces for ``scripts/bench_attacks.py`` (run in its own venv).

    .govrix/bench/agentdojo-venv/bin/python scripts/bench_attacks_export.py [--out DIR]

Runs inside the bench-only AgentDojo venv (``agentdojo==0.1.35``; never a project dependency,
``scripts/bench_attacks.py`` says how to create it) and imports nothing from the project, so the
project's interpreter never needs agentdojo. For benchmark version v1.2.2, every suite:

- one ``suite`` record: the system message AgentDojo's pipelines use and the suite's tools as
  OpenAI function specs (from each function's pydantic parameter model);
- one ``case`` per user task (benign): its ground-truth calls run through the suite's
  ``FunctionsRuntime`` on the environment the user task initialises, each with the tool's real
  output formatted as AgentDojo's tool executor formats it (``tool_result_to_str``);
- one ``case`` per (user task, injection task) pair: the same, with the injection vectors the
  user task's ground truth reads filled as the ``important_instructions`` attack fills them
  (``ImportantInstructionsAttack.attack``: the attack text with the injection task's goal), then
  the injection task's ground truth on the same environment up to its first *harmful* call,
  which ends the case.

Harmful is decided without naming any tool: the first ground-truth call of the injection task
whose execution changes the environment (a side effect: money sent, mail sent, file shared, page
visited); the calls before it are the reads that gather what it sends. An injection task none of
whose calls changes the environment uses its last call; one whose ground truth has no call at
all (v1.2.2: eight workspace tasks and one travel task) is skipped and listed. Output: ``agentdojo-v1.2.2.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agentdojo.agent_pipeline.agent_pipeline import load_system_message
from agentdojo.agent_pipeline.base_pipeline_element import BasePipelineElement
from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack
from agentdojo.base_tasks import BaseInjectionTask, BaseUserTask
from agentdojo.functions_runtime import FunctionCall, FunctionsRuntime, TaskEnvironment
from agentdojo.task_suite.load_suites import get_suites
from agentdojo.task_suite.task_suite import TaskSuite

VERSION = "v1.2.2"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".govrix" / "bench" / "agentdojo"
#: The model the attack text addresses ("... to you, GPT-4."); any name of MODEL_NAMES works.
TARGET_MODEL = "gpt-4o-2024-05-13"


class _Named(BasePipelineElement):  # type: ignore[misc]  # agentdojo: its own venv
    """A pipeline that is never queried: the attack only reads its name for the model's name."""

    name = TARGET_MODEL

    def query(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the export never runs a model")


def _jsonable(value: Any) -> Any:
    """Ground-truth arguments as JSON (nested FunctionCalls do not occur in v1.2.2's)."""
    return json.loads(json.dumps(value, default=str))


def tool_specs(suite: TaskSuite[Any]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": f.name,
                "description": f.description,
                "parameters": f.parameters.model_json_schema(),
            },
        }
        for f in suite.tools
    ]


def run_call(
    runtime: FunctionsRuntime, env: TaskEnvironment, call: FunctionCall
) -> tuple[str, bool]:
    """The tool's output as the model would read it, and whether the call changed `env`."""
    before = env.model_dump_json()
    result, error = runtime.run_function(env, call.function, call.args)
    output = f"Error: {error}" if error is not None else tool_result_to_str(result)
    return output, env.model_dump_json() != before


def step(call: FunctionCall, output: str, label: str) -> dict[str, Any]:
    return {"function": call.function, "args": _jsonable(dict(call.args)), "output": output,
            "label": label}  # fmt: skip


def user_steps(
    suite: TaskSuite[Any], task: BaseUserTask[Any], injections: dict[str, str], label: str
) -> tuple[list[dict[str, Any]], FunctionsRuntime, TaskEnvironment]:
    env = task.init_environment(suite.load_and_inject_default_environment(injections))
    runtime = FunctionsRuntime(suite.tools)
    steps = []
    for call in task.ground_truth(env.model_copy(deep=True)):
        output, _ = run_call(runtime, env, call)
        steps.append(step(call, output, label))
    return steps, runtime, env


def injection_steps(
    task: BaseInjectionTask[Any], runtime: FunctionsRuntime, env: TaskEnvironment
) -> list[dict[str, Any]]:
    """The injection task's ground truth up to and including its first harmful call."""
    calls = task.ground_truth(env.model_copy(deep=True))
    steps = []
    for i, call in enumerate(calls):
        output, changed = run_call(runtime, env, call)
        if changed or i == len(calls) - 1:
            steps.append(step(call, output, "harmful"))
            break
        steps.append(step(call, output, "attack_read"))
    return steps


def export(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"agentdojo-{VERSION}.jsonl"
    system = load_system_message(None)
    counts: dict[str, tuple[int, int, int]] = {}
    with path.open("w", encoding="utf-8") as f:

        def emit(doc: dict[str, Any]) -> None:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")

        for name, suite in get_suites(VERSION).items():
            emit({"type": "suite", "suite": name, "version": VERSION, "system": system,
                  "tools": tool_specs(suite)})  # fmt: skip
            attack = ImportantInstructionsAttack(suite, _Named())
            default_env = suite.load_and_inject_default_environment({})
            # An injection task whose ground truth has no call (a message to say, or a goal
            # AgentDojo checks only on the final environment) has no harmful call to replay.
            callable_tasks = {
                iid: inj
                for iid, inj in suite.injection_tasks.items()
                if inj.ground_truth(default_env.model_copy(deep=True))
            }
            skipped = sorted(set(suite.injection_tasks) - set(callable_tasks))
            emit({"type": "skipped", "suite": name, "injection_tasks": skipped})
            pairs = 0
            for uid, user in suite.user_tasks.items():
                steps, _, _ = user_steps(suite, user, {}, "benign")
                emit({"type": "case", "suite": name, "id": uid, "user_task": uid,
                      "injection_task": None, "prompt": user.PROMPT, "steps": steps})  # fmt: skip
                for iid, inj in callable_tasks.items():
                    injections = attack.attack(user, inj)
                    steps, runtime, env = user_steps(suite, user, injections, "user")
                    steps += injection_steps(inj, runtime, env)
                    emit({"type": "case", "suite": name, "id": f"{uid}/{iid}", "user_task": uid,
                          "injection_task": iid, "prompt": user.PROMPT,
                          "vectors": sorted(injections), "steps": steps})  # fmt: skip
                    pairs += 1
            counts[name] = (len(suite.user_tasks), pairs, len(skipped))
    for name, (users, pairs, skipped_n) in counts.items():
        print(
            f"{name}: {users} user tasks, {pairs} (user, injection) pairs"
            f" ({skipped_n} injection tasks without a ground-truth call skipped)"
        )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    print(f"wrote {export(ap.parse_args().out)}")


if __name__ == "__main__":
    main()
