"""Facts about one action: the vocabulary the rules are written against.

The verb of an action and its class (base risk) come from verbs.py and vocabulary.yaml.

Argument values are facts too (values.py): PII and secrets through the proxy's scanner,
destinations (internal or external, known counterparties from the history), amounts, paths,
shell commands and the deletion scope. Class words in an MCP server's name no longer decide the
data class on their own (`server_data_classes`); the tool's name, fields and values do.

Given the conversation that produced a call (provenance.py, docs/provenance.md), its steering
values are trusted (the user or system said them), untrusted (only a tool returned them) or
invented, and an untrusted value is *injected* when it sits next to text in a tool result that
gives the model orders; instruction cues in tool output and tool-returned tokens in an outbound
payload are facts too. Without a conversation these facts are unknown and no rule on them fires.

Target scope (sensitivity_level): 0 → 0.6, 1 → 0.8, 2 → 1.0, 3 → 1.2, 4 → 1.5, absent → 1.0.
MCP trust: no MCP context 1.0; verified local (stdio) 1.0; verified remote 1.1; verification
unknown 1.2 (local) / 1.3 (remote); unverified local 1.3; unverified remote 1.5.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from api.scoring.fields import FieldClassifier, words
from api.scoring.models import ActionEvent, HistoryFacts
from api.scoring.provenance import Conversation, provenance_facts
from api.scoring.values import value_facts
from api.scoring.verbs import VOCABULARY, action_data_classes, action_verb, scope_classes

SCOPE_FACTOR: dict[int, float] = {0: 0.6, 1: 0.8, 2: 1.0, 3: 1.2, 4: 1.5}

_REMOTE_TRANSPORTS = frozenset({"sse", "http", "https", "streamable-http", "streamable_http", "ws"})
_REMOTE_TRANSPORTS |= {"websocket", "websockets", "remote", "tcp"}

_EGRESS_DOMAINS = frozenset(VOCABULARY.egress_domains)
_EXTERNAL_WORDS = frozenset(VOCABULARY.external_words)
#: Parameters that name where an action lands; a production name in any of them marks the target.
_TARGET_PARAM_KEYS = (
    "environment", "env", "stage", "database", "db", "table", "cluster", "namespace", "bucket",
    "host", "target", "project",
)  # fmt: skip
_PROD_RE = re.compile(r"(?:^|[^a-z])(prod|production|live|prd)(?:$|[^a-z])")
# Parameter keys that name where data goes, and keys that give a record count.
_DESTINATION_KEYS = frozenset(
    {"url", "uri", "endpoint", "webhook", "webhook_url", "destination", "dest", "to"}
    | {"recipient", "recipients", "target_url", "bucket", "host", "channel", "email"}
    | {"address", "upload_url"}
)
_INTERNAL_HOST_RE = re.compile(
    r"(localhost|127\.0\.0\.1|\.internal\b|\.local\b|\.corp\b|\.lan\b|//10\.|//192\.168\.)"
)
_COUNT_KEYS = frozenset(
    {"limit", "count", "rows", "records", "max_results", "page_size", "batch_size", "size"}
    | {"top", "n", "max_rows"}
)
_BULK_WORDS = frozenset(["bulk", "all", "full", "dump", "everything", "entire"])
BULK_THRESHOLD = 1000
BULK_LIST = 10  # ids or items deleted in one call from which the deletion is bulk

_DESTRUCTIVE_RE = re.compile(
    r"\b(drop\s+(table|database|schema)|truncate\s+table|delete\s+from\s+\w+\s*(;|$)|rm\s+-[a-z]*r"
    r"[a-z]*f|rm\s+-[a-z]*f[a-z]*r|mkfs|dd\s+if=|--force\b|force[_ ]push|git\s+push\s+-f)",
    re.IGNORECASE,
)
_SHELL_RE = re.compile(
    r"(\$\(|`|&&|\|\||;\s*\w|\|\s*(sh|bash|zsh|python|perl)\b|curl\s+[^|]*\|"
    r"|wget\s|nc\s+-|/dev/tcp/|base64\s+-d)",
    re.IGNORECASE,
)
_INJECTION_RE = re.compile(
    r"(ignore\s+(all\s+)?(previous|prior|above)\s+instructions|disregard\s+(the\s+)?"
    r"(previous|system)|you\s+are\s+now\b|system\s+prompt|reveal\s+your\s+(instructions|prompt)"
    r"|</?system>|jailbreak|do\s+anything\s+now)",
    re.IGNORECASE,
)
_SECRET_VALUE_RE = re.compile(
    r"(AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpors]-[A-Za-z0-9-]"
    r"{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.)"
)
_REMOTE_EXEC_RE = re.compile(
    r"((curl|wget)\b[^|;]*\|\s*(sudo\s+)?(sh|bash|zsh|python3?|perl)\b|base64\s+-d[^|]*\|\s*(sh|bash)"
    r"|/dev/tcp/|nc\s+-e|powershell\s+-enc)",
    re.IGNORECASE,
)
# Literals without which each pattern above cannot match (lower case).
_DESTRUCTIVE_HINTS = ("drop", "truncate", "delete", "rm", "mkfs", "dd", "force", "push")
_SHELL_HINTS = ("$(", "`", "&&", "|", ";", "wget", "nc", "/dev/tcp/", "base64")
_INJECTION_HINTS = ("ignore", "disregard", "you", "system", "reveal", "jailbreak", "anything")
_SECRET_HINTS = ("akia", "sk-", "gh", "xox", "-----begin", "eyj")
_REMOTE_HINTS = ("curl", "wget", "base64", "/dev/tcp/", "nc", "powershell")


def _has(low: str, hints: tuple[str, ...]) -> bool:
    return any(h in low for h in hints)


def _search(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text) is not None


_READONLY_SQL_RE = re.compile(r"^\s*(select|with|explain|show|describe)\b", re.IGNORECASE)
_WRITE_SQL_RE = re.compile(
    r"\b(insert|update|delete|drop|truncate|alter|create|grant|revoke|merge|copy)\b", re.IGNORECASE
)
_SQL_KEYS = frozenset(["sql", "query", "statement"])
_APPROVAL_KEYS = frozenset(["approved_by", "approval_id", "human_approved", "approval_ticket"])
_TEXT_SCAN_LIMIT = 4096  # parameters can be large; the patterns we look for show up early


class FactKind(StrEnum):
    """The type of a fact, which decides the operators a condition may use on it."""

    STR = "str"
    NUM = "num"
    BOOL = "bool"
    SET = "set"
    SEQ = "seq"
    FLAG = "flag"  # asserted by a rule; False until then


# Every fact the engine derives from an event and its history. Rules may only name these or
# flags that some rule asserts; anything else is a load error.
BASE_FACTS: dict[str, FactKind] = {
    "action": FactKind.STR,
    "domain": FactKind.STR,
    "scope": FactKind.STR,
    "verb": FactKind.STR,
    "verb_word": FactKind.STR,
    "verb_class": FactKind.STR,
    "data_classes": FactKind.SET,
    "field_names": FactKind.SET,
    "data_weight": FactKind.NUM,
    "field_count": FactKind.NUM,
    "sensitive_field_count": FactKind.NUM,
    "unclassified_field_count": FactKind.NUM,
    "sensitivity": FactKind.NUM,
    "resource_type": FactKind.STR,
    "resource_id": FactKind.STR,
    "is_production": FactKind.BOOL,
    "mcp_present": FactKind.BOOL,
    "mcp_verified": FactKind.BOOL,
    "mcp_transport": FactKind.STR,
    "mcp_remote": FactKind.BOOL,
    "mcp_server": FactKind.STR,
    "tool_name": FactKind.STR,
    "agent_identified": FactKind.BOOL,
    "agent_type": FactKind.STR,
    "user_present": FactKind.BOOL,
    "prior_actions": FactKind.SEQ,
    "prior_verb_classes": FactKind.SET,
    "prior_data_classes": FactKind.SET,
    "egress": FactKind.BOOL,
    "network_call": FactKind.BOOL,
    "external_destination": FactKind.BOOL,
    "record_count": FactKind.NUM,
    "bulk": FactKind.BOOL,
    "param_keys": FactKind.SET,
    "params_destructive": FactKind.BOOL,
    "params_shell": FactKind.BOOL,
    "params_injection": FactKind.BOOL,
    "params_secret_value": FactKind.BOOL,
    "params_remote_exec": FactKind.BOOL,
    "params_readonly_sql": FactKind.BOOL,
    "human_approved": FactKind.BOOL,
    "dry_run": FactKind.BOOL,
    "history_known": FactKind.BOOL,
    "first_use_of_server": FactKind.BOOL,
    "first_use_of_resource": FactKind.BOOL,
    "rate_vs_baseline": FactKind.NUM,
    "hour_utc": FactKind.NUM,
    # --- the verb in detail (primary_verb) ---
    "verb_classes": FactKind.SET,  # every verb class the name (or arguments) names
    "verb_source": FactKind.STR,  # name | arguments | none
    "server_data_classes": FactKind.SET,  # class words of an MCP server's name (advisory)
    # --- value-level facts from the arguments (values.py) ---
    "value_data_classes": FactKind.SET,  # classes of PII found and of keys inside the payload
    "pii_types": FactKind.SET,  # scanner types in payload values: email phone ssn credit_card …
    "pii_count": FactKind.NUM,
    "sensitive_pii": FactKind.BOOL,  # card, SSN, IBAN, or a special-category key (passport …)
    "secret_in_args": FactKind.BOOL,  # the scanner found a secret in an argument value
    "destinations": FactKind.SET,  # kinds: email url iban phone account handle channel share
    "destination": FactKind.STR,  # external (an unknown outside party) | internal; else unknown
    "destination_count": FactKind.NUM,
    "external_destination_count": FactKind.NUM,
    "external_destination_kinds": FactKind.SET,
    "known_destination": FactKind.BOOL,  # an external destination the agent dealt with before
    # An external destination not among the agent's known counterparties; unknown (None) when
    # the caller does not track counterparties (HistoryFacts.known_counterparties is None).
    "new_destination": FactKind.BOOL,
    "external_links": FactKind.NUM,  # external URLs inside payload text
    "amount": FactKind.NUM,  # the largest amount of money in the arguments
    "currency": FactKind.STR,
    "path_count": FactKind.NUM,
    "sensitive_path": FactKind.BOOL,  # ~/.ssh, .env, credentials, /etc/shadow …
    "system_path": FactKind.BOOL,  # /etc, /usr, /bin, C:\\Windows …
    "command_words": FactKind.SET,  # the program of each command in a shell chain
    "deletes_by_command": FactKind.BOOL,
    "deletion_scope": FactKind.STR,  # single | bulk | all | recursive (when something is deleted)
    # --- provenance and data flow from the conversation (provenance.py); unknown without one ---
    "provenance": FactKind.STR,  # worst of the steering values: untrusted > invented > trusted
    "destination_provenance": FactKind.STR,  # the same over the destinations only
    "untrusted_value_count": FactKind.NUM,  # steering values only tool output holds
    "invented_value_count": FactKind.NUM,  # steering values found nowhere in the conversation
    "instruction_in_tool_result": FactKind.BOOL,  # a tool result addresses the model with orders
    "request_in_tool_result": FactKind.BOOL,  # a tool result politely asks its reader to act
    "requested_action": FactKind.BOOL,  # the user's words (else the system's) ask for this kind
    "injected_value_count": FactKind.NUM,  # steering values from the text around such orders
    "injected_destination": FactKind.BOOL,  # a destination among them
    "injected_flow_count": FactKind.NUM,  # payload tokens (6+ chars) from that text
    "flow_token_count": FactKind.NUM,  # payload tokens (6+ chars) only a tool returned
    "exfiltration": FactKind.BOOL,  # an outbound call carries what a tool returned
}

Facts = dict[str, Any]


def mcp_trust(event: ActionEvent) -> float:
    """The MCP trust factor (> 1 for unverified servers and remote transports)."""
    mcp = event.mcp_context
    if mcp is None:
        return 1.0
    remote = (mcp.transport or "").lower() in _REMOTE_TRANSPORTS
    if mcp.is_verified is True:
        return 1.1 if remote else 1.0
    if mcp.is_verified is None:
        return 1.3 if remote else 1.2
    return 1.5 if remote else 1.3


def _iter_strings(value: Any, budget: list[int]) -> Iterable[str]:
    """Yield string leaves of a parameter tree until `budget[0]` characters have been seen."""
    if budget[0] <= 0:
        return
    if isinstance(value, str):
        budget[0] -= len(value)
        yield value[:_TEXT_SCAN_LIMIT]
    elif isinstance(value, dict):
        for v in value.values():
            yield from _iter_strings(v, budget)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _iter_strings(v, budget)


def _record_count(params: dict[str, Any]) -> int | None:
    best: int | None = None
    for key, value in params.items():
        if key.lower() in _COUNT_KEYS and isinstance(value, int) and not isinstance(value, bool):
            best = value if best is None else max(best, value)
    return best


def _external_destination(params: dict[str, Any], scope_words: set[str]) -> bool:
    if scope_words & _EXTERNAL_WORDS:
        return True
    for key, value in params.items():
        if key.lower() not in _DESTINATION_KEYS or not isinstance(value, str):
            continue
        if ("://" in value or "@" in value) and not _INTERNAL_HOST_RE.search(value):
            return True
    return False


def _top_key(path: str) -> str:
    """``$.to`` and ``$.recipients[0]`` -> the top-level key (``to``, ``recipients``)."""
    return path[2:].split(".", 1)[0].split("[", 1)[0] if path.startswith("$.") else ""


def _utc_hour(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    return (ts.astimezone(UTC) if ts.tzinfo else ts).hour


def extract_facts(
    event: ActionEvent,
    history: HistoryFacts | None,
    classifier: FieldClassifier,
    *,
    internal_domains: tuple[str, ...] = (),
    salt: bytes = b"",
    conversation: Conversation | None = None,
) -> Facts:
    """Derive every base fact from an event and the agent's history. Pure and deterministic.

    The values the value facts were drawn from (paths and kinds, never raw values) are under
    ``"_values"``; a destination's digest is salted with `salt`. `conversation` (the messages
    that produced the call, or a session's tool results) gives the provenance facts."""
    domain, scope, verb = event.action.split(":", 2)
    domain = domain.lower()
    params = event.parameters
    tracked = history is not None and history.known_counterparties is not None
    known = frozenset(history.known_counterparties or ()) if history else frozenset()
    vfacts, values = value_facts(
        params,
        internal_domains=internal_domains,
        known=known,
        salt=salt,
        classify=classifier.classify,
    )
    arg_verbs = vfacts.pop("_arg_verbs")
    v = action_verb(domain, scope, verb, arg_verbs)
    verb_word, verb_cls = v.word, v.cls

    field_names: set[str] = set()
    data_classes: set[str] = set()
    unclassified = sensitive = 0
    # A top-level argument that holds the call's destination (an address in "email" or
    # "recipient") says where the data goes, not what data goes: its name classifies nothing,
    # as its value is no PII sent (values.py).
    dest_keys = {_top_key(x.path) for x in values}
    for item in event.data_fields_accessed:
        name, cls = classifier.classify_field(item)
        field_names.add(name)
        if isinstance(item, str) and item in dest_keys and item in params:
            continue
        if cls is None:
            unclassified += 1
        else:
            data_classes.add(cls)
            if cls not in ("public", "internal"):
                sensitive += 1
    target = event.target
    resource_type = target.resource_type if target else None
    resource_id = target.resource_id if target else None
    implied, server_classes = action_data_classes(domain, scope, verb)
    implied |= scope_classes(resource_type or "")
    data_classes |= implied
    # Contact details in a message (an address, a phone number) are ordinary; sensitive kinds
    # found in values and classified keys inside the payload count as data the action handles.
    data_classes |= vfacts["value_data_classes"]
    data_weight = max((classifier.weight(c) for c in data_classes), default=1.0)

    recent = history.recent_actions if history else []
    prior = [*recent, *event.preceding_actions]
    prior_verbs: set[str] = set()
    prior_data: set[str] = set()
    for act in prior:
        parts = act.split(":", 2)
        if len(parts) == 3:
            d = parts[0].lower()
            prior_verbs.add(action_verb(d, parts[1], parts[2]).cls)
            prior_data |= action_data_classes(d, parts[1], parts[2])[0]

    param_keys = {k.lower() for k in params}
    budget = [4 * _TEXT_SCAN_LIMIT]
    destructive = shell = injection = secret_value = remote_exec = False
    for text in _iter_strings(params, budget):
        # Each pattern runs only when a literal it cannot match without is present: a substring
        # test is ~100x cheaper than a regex pass over a long argument.
        low = text.lower()
        destructive = destructive or (
            _has(low, _DESTRUCTIVE_HINTS) and _search(_DESTRUCTIVE_RE, text)
        )
        shell = shell or (_has(low, _SHELL_HINTS) and _search(_SHELL_RE, text))
        injection = injection or (_has(low, _INJECTION_HINTS) and _search(_INJECTION_RE, text))
        secret_value = secret_value or (
            _has(low, _SECRET_HINTS) and _search(_SECRET_VALUE_RE, text)
        )
        remote_exec = remote_exec or (_has(low, _REMOTE_HINTS) and _search(_REMOTE_EXEC_RE, text))
    secret_value = secret_value or vfacts["secret_in_args"]
    sql = [v for k, v in params.items() if k.lower() in _SQL_KEYS and isinstance(v, str)]
    readonly_sql = bool(sql) and all(
        _READONLY_SQL_RE.match(q) and not _WRITE_SQL_RE.search(q) for q in sql
    )
    for key, value in params.items():
        # A "force": true flag is as destructive as "--force" on a command line.
        if key.lower() == "force" and value is True:
            destructive = True

    scope_words = set(words(scope))
    network = domain in _EGRESS_DOMAINS
    # An unrecognised verb on a network domain counts as egress: fail towards caution.
    egress = verb_cls in ("send", "export") or (network and verb_cls != "read")
    count = _record_count(params)
    bulk = (
        (count is not None and count >= BULK_THRESHOLD)
        or bool(scope_words & _BULK_WORDS)
        or bool(set(words(verb)) & _BULK_WORDS)
        or any(params.get(k) is True for k in ("all", "all_records", "full_export"))
    )
    deletes = (verb_cls == "delete" and params.get("dry_run") is not True) or vfacts[
        "deletes_by_command"
    ]
    deletion_scope = None
    if deletes:
        if vfacts["_recursive"]:
            deletion_scope = "recursive"
        elif vfacts["_all"]:
            deletion_scope = "all"
        elif bulk or vfacts["_bulk_ids"] >= BULK_LIST:
            deletion_scope = "bulk"
        else:
            deletion_scope = "single"
    unknown_external = vfacts.pop("_unknown_external")
    for k in ("_recursive", "_all", "_bulk_ids"):
        del vfacts[k]
    env_text = " ".join(
        str(x).lower()
        for x in (scope, resource_id, *(params.get(k) for k in _TARGET_PARAM_KEYS))
        if isinstance(x, str)
    )
    mcp = event.mcp_context
    transport = (mcp.transport or "").lower() if mcp and mcp.transport else None
    session = event.session
    agent = event.agent
    return {
        "action": event.action,
        "domain": domain,
        "scope": scope.lower(),
        "verb": verb.lower(),
        "verb_word": verb_word,
        "verb_class": verb_cls,
        "data_classes": data_classes,
        "field_names": field_names,
        "data_weight": data_weight,
        "field_count": len(event.data_fields_accessed),
        "sensitive_field_count": sensitive,
        "unclassified_field_count": unclassified,
        "sensitivity": target.sensitivity_level if target else None,
        "resource_type": resource_type.lower() if resource_type else None,
        "resource_id": resource_id,
        "is_production": bool(_PROD_RE.search(env_text)),
        "mcp_present": mcp is not None,
        "mcp_verified": mcp.is_verified if mcp else None,
        "mcp_transport": transport,
        "mcp_remote": transport in _REMOTE_TRANSPORTS if transport else False,
        "mcp_server": (mcp.server_id or mcp.server_name) if mcp else None,
        "tool_name": mcp.tool_name if mcp else None,
        "agent_identified": bool(agent and agent.agent_id),
        "agent_type": agent.agent_type if agent else None,
        "user_present": bool(session and session.user_id),
        "prior_actions": prior,
        "prior_verb_classes": prior_verbs,
        "prior_data_classes": prior_data,
        "egress": egress,
        "network_call": network,
        "external_destination": _external_destination(params, scope_words)
        or vfacts["external_destination_count"] > 0,
        "record_count": count,
        "bulk": bulk,
        "param_keys": param_keys,
        "params_destructive": destructive,
        "params_shell": shell,
        "params_injection": injection,
        "params_secret_value": secret_value,
        "params_remote_exec": remote_exec,
        "params_readonly_sql": readonly_sql,
        "human_approved": any(v for k, v in params.items() if k.lower() in _APPROVAL_KEYS),
        "dry_run": params.get("dry_run") is True,
        "history_known": history is not None,
        "first_use_of_server": history.first_use_of_server if history else None,
        "first_use_of_resource": history.first_use_of_resource if history else None,
        "rate_vs_baseline": history.rate_vs_baseline if history else None,
        "hour_utc": _utc_hour(event.timestamp),
        "verb_classes": set(v.classes),
        "verb_source": v.source,
        "server_data_classes": server_classes,
        **vfacts,
        # Whether a destination is new is known only where counterparties are tracked.
        "new_destination": unknown_external if tracked else None,
        "deletion_scope": deletion_scope,
        **provenance_facts(params, (x.path for x in values), verb_cls, conversation, v.classes),
        "_values": values,
    }
