"""Micro-benchmark of policy evaluation: prints µs per ``PolicySet.evaluate`` call.

Run: ``.venv/bin/python -m scripts.bench_policy``. The rule set is 20 rules mixing every
operator; contexts are a dict and a ``PolicyContext``, one matching few rules and one matching many.
"""

from __future__ import annotations

import functools
import timeit
from collections.abc import Mapping

from addon.policy import PolicyContext, PolicySet, parse_policy

_CONDITIONS = [
    '{field: agent_name, op: regex, value: "^intern-"}',
    "{field: model, op: in, value: [gpt-4o, o1, o3]}",
    "{field: token_count, op: gt, value: 100000}",
    "{field: cost_usd, op: gte, value: 1.5}",
    "{field: pii_detected, op: eq, value: true}",
    "{field: pii_types, op: contains, value: secret}",
    "{field: risk_level, op: gte, value: high}",
    "{field: provider, op: eq, value: anthropic}",
    "{field: endpoint, op: contains, value: /embeddings}",
    "{field: tool_name, op: in, value: [shell, exec, browser]}",
]
_ACTIONS = ["block", "redact", "tag", "log"]


def build_rules(n: int = 20) -> PolicySet:
    """``n`` rules, each two conditions: a direction check plus one of the conditions above."""
    lines = ["version: 1", "rules:"]
    for i in range(n):
        action = _ACTIONS[i % len(_ACTIONS)]
        lines += [
            f"  - name: rule-{i}",
            "    when:",
            "      - {field: direction, op: eq, value: request}",
            f"      - {_CONDITIONS[i % len(_CONDITIONS)]}",
            f"    action: {action}",
        ]
        if action == "tag":
            lines.append(f"    tag: tag-{i}")
    return parse_policy("\n".join(lines) + "\n", "<bench>")


def _contexts() -> dict[str, Mapping[str, object] | PolicyContext]:
    quiet: dict[str, object] = {
        "agent_id": "agt_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "agent_name": "billing-bot",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "token_count": 1200,
        "cost_usd": 0.002,
        "pii_detected": False,
        "pii_types": [],
        "direction": "request",
    }
    busy: dict[str, object] = {
        **quiet,
        "agent_name": "intern-7",
        "model": "o1",
        "token_count": 200_000,
        "cost_usd": 3.0,
        "pii_detected": True,
        "pii_types": ["email", "secret"],
        "tool_name": "shell",
        "risk_level": "critical",
    }
    return {
        "dict, few matches": quiet,
        "dict, many matches": busy,
        "PolicyContext, few matches": PolicyContext(**quiet),  # type: ignore[arg-type]
        "PolicyContext, many matches": PolicyContext(**busy),  # type: ignore[arg-type]
        "dict, direction=response (1 cond each)": {**busy, "direction": "response"},
    }


def main() -> None:
    """Print one row per (rule count, context)."""
    print(f"{'rules':>5}  {'context':<40} {'µs/eval':>8}  matched")
    for n in (0, 1, 20, 100):
        policies = build_rules(n)
        for label, ctx in _contexts().items():
            timer = timeit.Timer(functools.partial(policies.evaluate, ctx))
            loops, _ = timer.autorange()
            best = min(timer.repeat(repeat=5, number=loops)) / loops
            matched = len(policies.evaluate(ctx).matched)
            print(f"{n:>5}  {label:<40} {best * 1e6:>8.2f}  {matched}")


if __name__ == "__main__":
    main()
