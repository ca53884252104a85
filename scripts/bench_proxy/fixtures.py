"""What the addon proxies are given and what they are checked against: a global budget in a
scratch database, the 20-rule policy file, and the events they recorded (so that an addon run
that recorded nothing cannot pass for a fast one)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from addon.policy import PolicyStore

#: 20 rules over every field and operator; several match every call (tags, logs), none blocks or
#: redacts the benchmark's traffic, so the cost measured is evaluation, not refusal.
POLICY = """\
version: 1
rules:
  - {name: block-interns, action: block, message: "interns use small models",
     when: [{field: agent_name, op: regex, value: "^intern-"}, {field: model, op: in, value: [gpt-4o, o1]}]}
  - {name: block-secrets, action: block, message: "remove the credential",
     when: [{field: direction, op: eq, value: request}, {field: pii_types, op: contains, value: secret}]}
  - {name: redact-customer-pii, action: redact,
     when: [{field: pii_types, op: in, value: [email, phone, ssn, credit_card]}]}
  - {name: tag-expensive, action: tag, tag: high-cost, when: [{field: cost_usd, op: gte, value: 0.50}]}
  - {name: tag-risky-tools, action: tag, tag: risky-tool-call,
     when: [{field: tool_name, op: regex, value: "."}, {field: risk_level, op: gte, value: high}]}
  - {name: log-big-prompts, action: log, when: [{field: token_count, op: gt, value: 50000}]}
  - {name: block-o1-preview, action: block, when: [{field: model, op: eq, value: o1-preview}]}
  - {name: tag-openai, action: tag, tag: vendor-openai, when: [{field: provider, op: eq, value: openai}]}
  - {name: log-chat, action: log, when: [{field: endpoint, op: contains, value: chat}]}
  - {name: block-iban, action: block, when: [{field: pii_types, op: contains, value: iban}]}
  - {name: tag-small-models, action: tag, tag: small-model, when: [{field: model, op: regex, value: "(?i)mini"}]}
  - {name: log-responses, action: log, when: [{field: direction, op: eq, value: response}]}
  - {name: block-test-agents-on-paid, action: block,
     when: [{field: provider, op: in, value: [mistral, groq]}, {field: agent_name, op: regex, value: "^test-"}]}
  - {name: tag-pii, action: tag, tag: pii-restricted, when: [{field: pii_detected, op: eq, value: true}]}
  - {name: log-token-heavy, action: log, when: [{field: token_count, op: gte, value: 4000}]}
  - {name: block-critical-risk, action: block, when: [{field: risk_level, op: eq, value: critical}]}
  - {name: tag-mid-cost, action: tag, tag: mid-cost,
     when: [{field: cost_usd, op: gte, value: 0.01}, {field: cost_usd, op: lt, value: 0.50}]}
  - {name: log-ip-addresses, action: log, when: [{field: pii_types, op: contains, value: ipv4}]}
  - {name: block-denylist, action: block, when: [{field: agent_name, op: in, value: [rogue-1, rogue-2, rogue-3]}]}
  - {name: tag-batch-agents, action: tag, tag: batch, when: [{field: agent_name, op: regex, value: "batch"}]}
"""


def write_policy(directory: Path) -> Path:
    path = directory / "policy.yaml"
    path.write_text(POLICY)
    rules = PolicyStore(path).load()  # fail here, not as a proxy that exits at start
    assert len(rules.rules) == 20, len(rules.rules)
    return path


def add_budget(dsn: str) -> None:
    """A global daily USD budget no benchmark can reach: every call reserves and settles."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO budgets (scope, period, metric, limit_value) "
            "VALUES ('global', 'daily', 'usd', 1e9)"
        )


def count_events(dsn: str) -> dict[str, int]:
    """What the addon recorded: events by direction, priced responses, reported usage."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE direction = 'request'),"
            " count(*) FILTER (WHERE direction = 'response'),"
            " count(*) FILTER (WHERE direction = 'response' AND usage_source = 'reported'),"
            " count(*) FILTER (WHERE direction = 'response' AND cost_usd IS NOT NULL),"
            " count(*) FILTER (WHERE policy_decisions IS NOT NULL)"
            " FROM events"
        ).fetchone()
        usd = conn.execute("SELECT coalesce(sum(usd_micros), 0) FROM budget_usage").fetchone()
    assert row is not None and usd is not None
    keys = ("request", "response", "reported_usage", "priced", "with_policy_decisions")
    return dict(zip(keys, (int(v) for v in row), strict=True)) | {"budget_usd_micro": int(usd[0])}


def wait_events(dsn: str, expected: int, timeout: float = 30.0) -> dict[str, int]:
    """Poll until ``expected`` request and response events landed (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        got = count_events(dsn)
        if (
            got["request"] >= expected and got["response"] >= expected
        ) or time.monotonic() > deadline:
            return got
        time.sleep(0.25)
