"""Policy rules, compiled once, evaluated per call: from PostgreSQL versions or a YAML file.

Pure (no mitmproxy import, no I/O on evaluation), in one module per concern:

- ``model``: the vocabulary (fields, actions, risk levels) and the records rules produce;
- ``parse``: file -> checked rules, every error a :class:`PolicyError` naming ``file:line``;
- ``evaluate``: :class:`PolicySet`, the compiled rules, and their evaluation;
- ``store``: :class:`PolicyStore`, the active set and what it came from, swapped when the file
  changes (``watch``) or a stored version is applied; a text that does not compile never swaps;
- ``sync`` (not imported here: it holds the database thread): :class:`~addon.policy.sync.PolicySync`
  applies the newest ``policy_versions`` row within a second (NOTIFY) and publishes the file;
- ``calls``: the context the proxy builds for the rules, and what it keeps of their decision.

Conditions are the shared language of :mod:`addon.conditions` (``docs/conditions.md``); the file
format is in ``docs/policy.md`` and ``tests/data/policies/example.yaml`` is a worked example.
"""

from addon.conditions import Condition
from addon.policy.calls import note_decision, policy_context
from addon.policy.evaluate import PolicySet
from addon.policy.model import (
    FIELDS,
    OPERATORS,
    RISK_LEVELS,
    BlockVerdict,
    Decision,
    PolicyContext,
    PolicyError,
    Rule,
)
from addon.policy.parse import load_policy_file, load_policy_text, parse_policy
from addon.policy.store import PolicyStore, watch

__all__ = [
    "FIELDS",
    "OPERATORS",
    "RISK_LEVELS",
    "BlockVerdict",
    "Condition",
    "Decision",
    "PolicyContext",
    "PolicyError",
    "PolicySet",
    "PolicyStore",
    "Rule",
    "load_policy_file",
    "load_policy_text",
    "note_decision",
    "parse_policy",
    "policy_context",
    "watch",
]
