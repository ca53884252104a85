"""Policy rules from one YAML file (``GOVRIX_POLICY_FILE``), compiled once, evaluated per call.

Pure (no mitmproxy import, no I/O on evaluation), in one module per concern:

- ``model``: the vocabulary (fields, actions, risk levels) and the records rules produce;
- ``parse``: file -> checked rules, every error a :class:`PolicyError` naming ``file:line``;
- ``evaluate``: :class:`PolicySet`, the compiled rules, and their evaluation;
- ``store``: :class:`PolicyStore`, the active set swapped when the file changes, and ``watch``;
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
from addon.policy.parse import load_policy_file, parse_policy
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
    "note_decision",
    "parse_policy",
    "policy_context",
    "watch",
]
