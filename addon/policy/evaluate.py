"""A compiled, immutable rule set and its evaluation against one call's facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from addon.conditions import Test, compile_all
from addon.policy.model import FIELDS, BlockVerdict, Decision, PolicyContext, Rule

__all__ = ["PolicySet"]

_BLOCK, _REDACT, _TAG, _LOG = 0, 1, 2, 3
_ACTION_CODE: Final[dict[str, int]] = {"block": _BLOCK, "redact": _REDACT, "tag": _TAG, "log": _LOG}

# Compiled conditions read ``record[field]``; a dict context is laid over this so every field
# exists, unknown ones as None.
_UNKNOWN: Final[dict[str, object]] = dict.fromkeys(FIELDS)
_asdict = msgspec.structs.asdict


def _action_arg(rule: Rule) -> BlockVerdict | str | None:
    if rule.action == "block":
        return BlockVerdict(rule.name, rule.message or f"blocked by policy rule {rule.name!r}")
    if rule.action == "tag":
        return rule.tag
    return None


class PolicySet:
    """An immutable, compiled set of rules. Build with :func:`addon.policy.parse_policy`."""

    __slots__ = ("_compiled", "rules", "source")

    def __init__(self, rules: Sequence[Rule] = (), source: str = "<memory>") -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.source = source
        # (name, test, action code, block verdict or tag); disabled rules are not compiled.
        self._compiled: tuple[tuple[str, Test, int, BlockVerdict | str | None], ...] = tuple(
            (r.name, compile_all(r.conditions, FIELDS), _ACTION_CODE[r.action], _action_arg(r))
            for r in self.rules
            if r.enabled
        )

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"PolicySet(source={self.source!r}, rules={len(self.rules)})"

    def evaluate(self, ctx: Mapping[str, object] | PolicyContext) -> Decision:
        """Evaluate every enabled rule, in file order, against ``ctx``."""
        decision = Decision()
        if not self._compiled:
            return decision
        record: Mapping[str, object]
        # A plain dict first: a failing isinstance against a msgspec Struct class costs ~0.1 µs.
        if type(ctx) is dict:
            record = _UNKNOWN | ctx
        elif isinstance(ctx, PolicyContext):
            record = _asdict(ctx)
        else:
            record = {**_UNKNOWN, **ctx}
        for name, test, code, arg in self._compiled:
            if not test(record):
                continue
            decision.matched.append(name)
            if code == _BLOCK:
                if decision.block is None:
                    decision.block = arg  # type: ignore[assignment]
            elif code == _TAG:
                decision.tags.append(arg)  # type: ignore[arg-type]
            elif code == _REDACT:
                decision.redact = True
            else:
                decision.logs.append(name)
        return decision
