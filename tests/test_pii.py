"""Tests for the PII/secret scanner (the addon/pii package)."""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon import config, pii
from addon.pii import (
    PII_TYPES,
    Finding,
    Match,
    StreamScanner,
    json_segments,
    phones,
    redact_json,
    redact_text,
    rules,
    scan_json,
    scan_segments,
    scan_text,
    secrets,
    validators,
)
from addon.pii.phones import valid_number

CORPUS = Path(__file__).parent / "data" / "pii_corpus.jsonl"


class CorpusLine(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    types: list[str]
    note: str


def _load_corpus() -> list[CorpusLine]:
    decoder = msgspec.json.Decoder(CorpusLine)
    return [decoder.decode(line) for line in CORPUS.read_bytes().splitlines() if line.strip()]


def _types(text: str) -> set[str]:
    return {m.type for m in scan_text(text)}


# One realistic value per type (checksums are real); used by the redaction and stream tests.
SAMPLES: dict[str, str] = {
    "email": "jane.doe+billing@example.com",
    "phone": "+44 20 7946 0958",
    "ssn": "078-05-1120",
    "credit_card": "4111 1111 1111 1111",
    "ipv4": "192.168.14.201",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "iban": "DE89 3704 0044 0532 0130 00",
    "secret": "ghp_aZUVGeWAHQzQAAmV7COc36256NJbxkS90VEP",
}
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi"
    "aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n"
    "7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFc\n"
    "-----END RSA PRIVATE KEY-----"
)


# --- corpus: precision and recall per type -------------------------------------------------------


def _score_table(corpus: list[CorpusLine]) -> tuple[dict[str, tuple[int, int, int]], str]:
    stats: dict[str, list[int]] = {t: [0, 0, 0] for t in PII_TYPES}
    for line in corpus:
        got, expected = _types(line.text), set(line.types)
        for t in PII_TYPES:
            if t in got and t in expected:
                stats[t][0] += 1
            elif t in got:
                stats[t][1] += 1
            elif t in expected:
                stats[t][2] += 1
    rows = [f"{'type':<12} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7}"]
    result: dict[str, tuple[int, int, int]] = {}
    for t, (tp, fp, fn) in stats.items():
        result[t] = (tp, fp, fn)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        rows.append(f"{t:<12} {tp:>4} {fp:>4} {fn:>4} {precision:>9.3f} {recall:>7.3f}")
    return result, "\n".join(rows)


def test_corpus_has_enough_positives_and_lookalikes_per_type() -> None:
    corpus = _load_corpus()
    positives = Counter(t for line in corpus for t in line.types)
    lookalikes = Counter(
        line.note.split()[0] for line in corpus if not line.types and "look-alike" in line.note
    )
    for t in PII_TYPES:
        assert positives[t] >= 40, f"{t}: only {positives[t]} positive lines"
        assert lookalikes[t] >= 40, f"{t}: only {lookalikes[t]} look-alike lines"
    assert all(set(line.types) <= set(PII_TYPES) for line in corpus)


def test_corpus_precision_and_recall_per_type() -> None:
    stats, table = _score_table(_load_corpus())
    print("\n" + table)
    for t, (tp, fp, fn) in stats.items():
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        assert precision >= 0.95, f"{t} precision {precision:.3f}\n{table}"
        assert recall >= 0.95, f"{t} recall {recall:.3f}\n{table}"


# --- validation rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # SSN: area/group/serial rules.
        ("SSN 078-05-1120", {"ssn"}),
        ("SSN 123 45 6789", {"ssn"}),
        ("SSN 000-12-3456", set()),
        ("SSN 666-12-3456", set()),
        ("SSN 912-12-3456", set()),
        ("SSN 123-00-4567", set()),
        ("SSN 123-45-0000", set()),
        ("part 123-45-6789-01", set()),
        ("ssn: 123456789", {"ssn"}),
        ("order 123456789", set()),
        # Credit cards: Luhn, issuer and length, one separator kind.
        ("card 4111 1111 1111 1111", {"credit_card"}),
        ("card 4111-1111-1111-1111", {"credit_card"}),
        ("card 4111111111111111", {"credit_card"}),
        ("card 4111111111111112", set()),
        ("card 4111 1111-1111 1111", set()),
        ("IMEI 490154203237518", set()),
        ("card 378282246310005", {"credit_card"}),
        ("card 4111 1111 1111 1111 123", {"credit_card"}),
        # Phones: '+' any region, national only NANP, bare digits only after a phone word.
        ("call +1 415 555 2671", {"phone"}),
        ("office (415) 555-2671", {"phone"}),
        ("office 415.555.2671", {"phone"}),
        ("call 4155552671", {"phone"}),
        ("order 4155552671", set()),
        ("call 4155552671 and order 2125550123", {"phone"}),
        ("SKU 123-456-7890", set()),
        ("ZIP+4 94105-1234", set()),
        # IPv4: octets, leading zeros, version strings.
        ("host 10.0.0.1", {"ipv4"}),
        ("host 256.1.1.1", set()),
        ("host 010.1.1.1", set()),
        ("v1.2.3.4", set()),
        ("version 1.2.3.4", set()),
        ("release: 10.0.0.1", set()),
        ("pkg==1.2.3.4", set()),
        ("OID 1.3.6.1.4.1", set()),
        ("Chrome/120.0.0.0", set()),
        ("ssh root@10.1.2.3", {"ipv4"}),
        # IPv6: ipaddress-valid, with digits, not code or clock times.
        ("addr 2001:db8::1", {"ipv6"}),
        ("addr [fe80::1ff:fe23:4567:890a]:443", {"ipv6"}),
        ("at 12:30:45", set()),
        ("std::vector", set()),
        ("MAC 00:1a:2b:3c:4d:5e", set()),
        ("a dead::beef joke", set()),
        # IBAN: mod-97 and country format.
        ("IBAN GB29 NWBK 6016 1331 9268 19", {"iban"}),
        ("IBAN GB29NWBK60161331926819", {"iban"}),
        ("IBAN GB28 NWBK 6016 1331 9268 19", set()),
        ("IBAN NL91 ABNA 0417 1643 00 AND MORE", {"iban"}),
        # Emails.
        ("write to a.b@example.com", {"email"}),
        ("icon@2x.png", set()),
        ("@username", set()),
        # Secrets.
        ("key sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ", {"secret"}),
        ("key sk-ant-api03-Qm7vTz2LpW9xRk4NcB8sHd1YfG6jUe3A", {"secret"}),
        ("scikit sk-learn-compatible-estimator-api", set()),
        ("sk-support-team-lead@example.com", {"email"}),
        ("AKIAIOSFODNN7EXAMPLE", set()),  # the documentation placeholder
        ("ASIAY34FZKBOKMUTVV7A", {"secret"}),
        ("gho_16C7e42F292c6912E7710c838347Ae178B4a", {"secret"}),
        (
            "github_pat_11ABCDEFG0"
            + "aB3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ" * 2
            + "_x9Y8w7V6u5T4s3R2q1",
            {"secret"},
        ),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp", {"secret"}),
        ("xoxb-not-a-token-at-all", set()),
        (JWT, {"secret"}),
        ("eyJub3QiOiJhIGp3dCJ9.eyJzdWIiOiIxIn0.c2ln", set()),
        (PEM, {"secret"}),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", {"secret"}),
        ("-----BEGIN PUBLIC KEY-----", set()),
        ("AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", {"secret"}),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", {"secret"}),
        # Everyday numbers.
        ("Meeting 2024-03-15 at 10:30:00, budget $1,234.56, 15% off", set()),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8", set()),
        ("uuid 550e8400-e29b-41d4-a716-446655440000", set()),
    ],
)
def test_types_detected(text: str, expected: set[str]) -> None:
    assert _types(text) == expected


def test_fast_phone_validity_agrees_with_phonenumbers() -> None:
    """addon/pii/phones.py re-implements is_valid_number for speed; same answers required."""
    rng = random.Random(7)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    checked = valid = 0
    for i in range(4000):
        code = rng.choice(codes) if i % 3 else rng.choice([1, 7, 33, 39, 44, 49, 61, 81, 86, 91])
        region = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code][0]
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if i % 2 and example is not None:  # mutate a real number so that about half stay valid
            digits = str(example.national_number)
            keep = rng.randint(1, len(digits) - 1)
            nsn = digits[:keep] + "".join(rng.choice("0123456789") for _ in digits[keep:])
        else:
            nsn = str(rng.randint(1, 9)) + str(rng.randint(0, 10 ** rng.randint(5, 12)))
        if nsn.startswith("0"):
            continue
        expected = phonenumbers.is_valid_number(
            phonenumbers.PhoneNumber(country_code=code, national_number=int(nsn))
        )
        assert valid_number(code, nsn) == expected, (code, nsn)
        checked += 1
        valid += expected
    assert checked > 3000 and 0.2 < valid / checked < 0.8


def test_spans_point_at_the_values_even_after_non_ascii_text() -> None:
    text = "Grüße 🚀 — mail " + SAMPLES["email"] + " ou appelez " + SAMPLES["phone"] + "."
    matches = scan_text(text)
    assert [(m.type, text[m.start : m.end]) for m in matches] == [
        ("email", SAMPLES["email"]),
        ("phone", SAMPLES["phone"]),
    ]
    assert all(isinstance(m, Match) for m in matches)


def test_pem_block_is_one_match_covering_the_whole_block() -> None:
    text = "config:\n" + PEM + "\nend"
    [match] = scan_text(text)
    assert text[match.start : match.end] == PEM


# --- redaction -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_redact_text_replaces_each_value(kind: str) -> None:
    value = SAMPLES[kind]
    redacted, count = redact_text(f"before {value} after")
    assert (redacted, count) == (f"before [REDACTED:{kind}] after", 1)


def test_redact_text_many_values_and_idempotence() -> None:
    text = " | ".join(f"{k}: {v}" for k, v in SAMPLES.items()) + " | jwt " + JWT + "\n" + PEM
    redacted, count = redact_text(text)
    assert count == len(SAMPLES) + 2
    for value in [*SAMPLES.values(), JWT, PEM]:
        assert value not in redacted
    assert redacted.count("[REDACTED:secret]") == 3
    assert redact_text(redacted) == (redacted, 0)


def test_redact_text_without_pii_returns_the_same_text() -> None:
    text = "Summarize the Q3 roadmap; version 2.4.1 shipped on 2024-05-01 at 10:30."
    redacted, count = redact_text(text)
    assert count == 0
    assert redacted is text


def test_redact_text_keeps_non_ascii_text_intact() -> None:
    redacted, count = redact_text("Ça coûte 5 € — écrivez à léa@example.com 🙂")
    assert (redacted, count) == ("Ça coûte 5 € — écrivez à [REDACTED:email] 🙂", 1)
    text = "名前: 田中 — 電話 +81 3-1234-5678、メール tanaka@example.jp"
    assert [(m.type, text[m.start : m.end]) for m in scan_text(text)] == [
        ("phone", "+81 3-1234-5678"),
        ("email", "tanaka@example.jp"),
    ]


def test_redact_json_walks_nested_documents_without_mutating_them() -> None:
    doc: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": f"my card is {SAMPLES['credit_card']}"},
            {"role": "user", "content": [{"type": "text", "text": f"ip {SAMPLES['ipv4']}"}]},
        ],
        "temperature": 0.2,
        "n": 1,
        "stop": None,
        "stream": True,
    }
    before = json.dumps(doc)
    redacted, count = redact_json(doc)
    assert count == 2
    assert json.dumps(doc) == before
    assert redacted["messages"][0]["content"] == "my card is [REDACTED:credit_card]"
    assert redacted["messages"][1]["content"][0]["text"] == "ip [REDACTED:ipv4]"
    assert (
        redacted["temperature"] == 0.2 and redacted["stop"] is None and redacted["stream"] is True
    )
    clean = {"a": ["nothing here", 3]}
    assert redact_json(clean) == (clean, 0)


# --- JSON paths and findings ---------------------------------------------------------------------


def test_json_segments_paths() -> None:
    doc = {
        "messages": [{"content": "a"}, {"content": [{"text": "b"}]}],
        "x-key": "c",
        "n": 5,
        "tools": [{"function": {"arguments": '{"q": "d"}'}}],
    }
    assert list(json_segments(doc)) == [
        ("$.messages[0].content", "a"),
        ("$.messages[1].content[0].text", "b"),
        ('$["x-key"]', "c"),
        ("$.tools[0].function.arguments", '{"q": "d"}'),
    ]


def test_scan_segments_aggregates_per_type_and_path() -> None:
    findings = scan_segments(
        [
            ("$.messages[0].content", f"{SAMPLES['email']} and other.person@example.org"),
            ("$.messages[1].content", f"nothing, then {SAMPLES['ssn']}"),
            ("$.tools_args[2].arguments", f'{{"to": "{SAMPLES["email"]}", "ip": "10.0.0.7"}}'),
            ("$.messages[2].content", "no pii here at all"),
        ]
    )
    assert findings == [
        Finding(type="email", count=2, path="$.messages[0].content"),
        Finding(type="ssn", count=1, path="$.messages[1].content"),
        # JSON text in a segment is reported at paths inside it
        Finding(type="email", count=1, path="$.tools_args[2].arguments.to"),
        Finding(type="ipv4", count=1, path="$.tools_args[2].arguments.ip"),
    ]


def test_findings_never_contain_raw_values() -> None:
    values = [*SAMPLES.values(), JWT, PEM]
    text = "\n".join(values)
    findings = scan_segments([("$.messages[0].content", text)])
    stream = StreamScanner()
    stream.feed(text)
    findings += stream.findings("$.choices[0].delta.content")
    encoded = msgspec.json.encode(findings).decode()
    assert {f.type for f in findings} == set(PII_TYPES)
    for value in values:
        for piece in value.split():
            if len(piece) >= 4:
                assert piece not in encoded
    assert set(Finding.__struct_fields__) == {"type", "count", "path"}


# --- streaming -----------------------------------------------------------------------------------

STREAM_CASES = [*SAMPLES.items(), ("secret", JWT), ("secret", PEM)]


def _stream_counts(chunks: list[str], **kwargs: int) -> dict[str, int]:
    scanner = StreamScanner(**kwargs)
    for chunk in chunks:
        scanner.feed(chunk)
    return {f.type: f.count for f in scanner.findings("$.content")}


@pytest.mark.parametrize(("kind", "value"), STREAM_CASES, ids=[k for k, _ in STREAM_CASES])
@pytest.mark.parametrize("scan_every", [1, 7, 512])
def test_stream_value_split_at_every_boundary_is_found_once(
    kind: str, value: str, scan_every: int
) -> None:
    text = f"Sure, here it is: {value}. Anything else?"
    for cut in range(1, len(text)):
        counts = _stream_counts([text[:cut], text[cut:]], scan_every=scan_every)
        assert counts == {kind: 1}, f"cut at {cut}"


@pytest.mark.parametrize(("kind", "value"), STREAM_CASES, ids=[k for k, _ in STREAM_CASES])
def test_stream_value_fed_char_by_char_and_in_three_pieces(kind: str, value: str) -> None:
    text = f"prefix text {value} suffix"
    assert _stream_counts(list(text), scan_every=1) == {kind: 1}
    n = len(text)
    for a in range(1, n, 3):
        for b in range(a + 1, n, 5):
            parts = [text[:a], text[a:b], text[b:]]
            assert _stream_counts(parts, scan_every=1) == {kind: 1}, (a, b)


def test_stream_counts_distinct_occurrences_across_a_long_stream() -> None:
    filler = "The quarterly numbers look fine and the team shipped version 2.4.1 on time. " * 20
    text = (
        filler
        + SAMPLES["email"]
        + " "
        + filler
        + SAMPLES["email"]
        + " "
        + SAMPLES["phone"]
        + " "
        + filler
        + JWT
        + filler
    )
    expected = {"email": 2, "phone": 1, "secret": 1}
    for size in (1, 3, 16, 100):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert _stream_counts(chunks, scan_every=64) == expected, size
        assert _stream_counts(chunks) == expected, size


@pytest.mark.parametrize(("chunk", "scan_every"), [(3, 1), (5, 40), (33, 512), (7, 100_000)])
def test_stream_matches_whole_text_scan(chunk: int, scan_every: int) -> None:
    text = "\n".join(line.text for line in _load_corpus())
    whole = Counter(m.type for m in scan_text(text))
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    assert _stream_counts(chunks, scan_every=scan_every) == dict(whole)


def _long_header_jwt() -> str:
    """A JWT whose header alone is longer than the scanner's hold-back window."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "k" * 300}
    part = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return part + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A long token still arriving must be kept whole, though its start is far behind.
        (f"token {_long_header_jwt()} ok", {"secret": 1}),
        # A counted value inside a long unbroken run must not be counted again on the next scan.
        ("mail jane@example.com." + "x" * 300 + " end", {"email": 1}),
        (f"ip 10.1.2.3/{'a' * 300} and {SAMPLES['iban']}", {"ipv4": 1, "iban": 1}),
    ],
)
@pytest.mark.parametrize("chunk", [1, 4, 50])
def test_stream_long_tokens(text: str, expected: dict[str, int], chunk: int) -> None:
    assert Counter(m.type for m in scan_text(text)) == expected
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    assert _stream_counts(chunks, scan_every=1) == expected
    assert _stream_counts(chunks, scan_every=64) == expected


def test_stream_findings_can_be_read_midway_without_double_counting() -> None:
    scanner = StreamScanner(scan_every=1)
    scanner.feed("mail jane@example.co")
    assert scanner.findings("$") == [Finding(type="email", count=1, path="$")]
    scanner.feed("m and more text" + " filler" * 40)
    assert scanner.findings("$") == [Finding(type="email", count=1, path="$")]


def test_stream_memory_stays_bounded() -> None:
    scanner = StreamScanner(scan_every=256)
    sentence = "No secrets in this sentence, just words and 42 numbers. "
    peak = 0
    for _ in range(20_000):
        scanner.feed(sentence)
        peak = max(peak, scanner.buffered_chars)
    assert peak < 1024
    # One endless token (no whitespace) is capped at max_pending.
    capped = StreamScanner(scan_every=256, max_pending=4096)
    for _ in range(10_000):
        capped.feed("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo")
    assert capped.buffered_chars < 4096 + 256 + 64 + 64


# --- JSON: decoded values, JSON inside strings, paths into it -------------------------------------


def _args(value: Any) -> str:
    """Tool-call arguments as a provider sends them: JSON text (escapes and all) in a string."""
    return json.dumps(value)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        # Each value right after an escaped newline or tab: in the raw text a word character
        # ('n', 't') is glued to it, so a scanner of raw JSON text loses '\b'.
        ("SSN:\n078-05-1120", "ssn"),
        ("cards on file\n4111 1111 1111 1111", "credit_card"),
        ("host\t10.20.30.40", "ipv4"),
        ("IBAN\nDE89 3704 0044 0532 0130 00", "iban"),
        ("office\n(415) 555-2671", "phone"),
        ("ring me\t+44 20 7946 0958", "phone"),
        ("notes\r\nghp_aZUVGeWAHQzQAAmV7COc36256NJbxkS90VEP", "secret"),
    ],
)
def test_values_after_json_escapes_are_found_at_decoded_paths(value: str, kind: str) -> None:
    arguments = _args({"to": "ops", "body": value})
    assert "\\n" in arguments or "\\t" in arguments
    base = "$.messages[1].tool_calls[0].function.arguments"
    assert scan_segments([(base, arguments)]) == [Finding(type=kind, count=1, path=base + ".body")]


def test_json_inside_json_inside_a_tool_result_is_decoded() -> None:
    inner = _args({"customer": {"card": "4111-1111-1111-1111", "ip": "10.0.0.9"}})
    result = _args({"status": "ok", "payload": inner, "items": [{"mail": "a.b@example.org"}]})
    findings = scan_segments([("$.messages[2].content", result)])
    assert sorted((f.type, f.path) for f in findings) == [
        ("credit_card", "$.messages[2].content.payload.customer.card"),
        ("email", "$.messages[2].content.items[0].mail"),
        ("ipv4", "$.messages[2].content.payload.customer.ip"),
    ]


def test_scan_json_walks_a_whole_body_with_numbers_and_keys_as_context() -> None:
    body = {
        "method": "tools/call",
        "params": {
            "name": "crm.update",
            "arguments": {"phone": 4155552671, "order": 4155552672, "x-note": "ssn 078051120"},
        },
    }
    findings = scan_json(body)
    assert sorted((f.type, f.path) for f in findings) == [
        ("phone", "$.params.arguments.phone"),
        ("ssn", '$.params.arguments["x-note"]'),
    ]


def test_a_key_that_is_pii_never_appears_in_a_path() -> None:
    doc = {"contacts": {"jane@example.com": "ssn 078-05-1120", "n2": "10.0.0.1"}}
    findings = scan_json(doc) + scan_segments(json_segments(doc))
    assert {f.path for f in findings} == {"$.contacts[*]", "$.contacts.n2"}
    assert "jane" not in msgspec.json.encode(findings).decode()


def test_one_leafs_key_never_lends_context_to_the_next_leaf() -> None:
    doc = {"phone": "n/a", "order": "4155552671", "ssn": "none", "ref": "078051120"}
    assert scan_json(doc) == []
    assert scan_segments([("$", json.dumps(doc))]) == []


def test_unparseable_json_text_is_still_scanned_across_escapes() -> None:
    truncated = '{"body": "SSN:\\n078-05-1120 and more'  # cut off mid-stream
    assert scan_segments([("$.a", truncated)]) == [Finding(type="ssn", count=1, path="$.a")]
    # and spans stay right for redaction
    assert redact_text(truncated)[0] == '{"body": "SSN:\\n[REDACTED:ssn] and more'


def test_redact_json_redacts_inside_tool_arguments_and_keeps_them_json() -> None:
    doc = {"tool_calls": [{"function": {"arguments": _args({"to": "x", "ssn": "a\n078-05-1120"})}}]}
    redacted, n = redact_json(doc)
    assert n == 1
    args = json.loads(redacted["tool_calls"][0]["function"]["arguments"])
    assert args == {"to": "x", "ssn": "a\n[REDACTED:ssn]"}


def test_mcp_params_are_scanned_as_decoded_values() -> None:
    arguments = {"query": "select *", "filters": {"email": "léa@example.fr", "n": 3}}
    assert scan_segments(json_segments(arguments, "$.params.arguments")) == [
        Finding(type="email", count=1, path="$.params.arguments.filters.email")
    ]


# --- phones: regions, 00 prefix, extensions, context ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # national formats of the default regions, with their trunk prefix or parentheses
        ("London office 020 7946 0958", {"phone"}),
        ("UK mobile 07700 900123", {"phone"}),
        ("Berlin 030 12345678", {"phone"}),
        ("Büro 030/1234567", {"phone"}),
        ("Paris 01 42 68 53 00", {"phone"}),
        ("portable 06 12 34 56 78", {"phone"}),
        ("São Paulo (11) 91234-5678", {"phone"}),
        ("Mumbai mobile 98765 43210", {"phone"}),
        ("Madrid teléfono 912 34 56 78", {"phone"}),
        # the '00' international prefix
        ("dial 0044 20 7946 0958", {"phone"}),
        ("0049 30 12345678", {"phone"}),
        # extensions, glued or marked (Faker's US formats among them)
        ("desk 415-555-9096x83119", {"phone"}),
        ("(415)555-9096x831", {"phone"}),
        ("001-415-555-9096x8311", {"phone"}),
        ("+1-415-555-9096x83", {"phone"}),
        ("415.555.9096 ext. 12", {"phone"}),
        ("1-415-555-9096", {"phone"}),
        # no phone from digits without context or shape
        ("order 02079460958", set()),
        ("tel 02079460958", {"phone"}),
        ("invoice 9876543210", set()),
        ("population 912 345 678", set()),  # valid in Spain, but no mark of a phone number
        ("released 2024-03-15", set()),
        ("total 1 234 567,89 EUR", set()),
        ("account 0730 5620 2199 3318", set()),
        ("ISBN 978-3-16-148410-0", set()),
    ],
)
def test_phone_formats(text: str, expected: set[str]) -> None:
    assert _types(text) == expected


def test_phone_regions_are_configurable() -> None:
    before = phones.regions()
    try:
        pii.configure_phone_regions(["US"])
        assert _types("London office 020 7946 0958") == set()
        assert _types("office (415) 555-2671") == {"phone"}
        assert _types("London +44 20 7946 0958") == {"phone"}  # '+' numbers: any country
        pii.configure_phone_regions(["gb", " DE "])
        assert phones.regions() == ("GB", "DE")
        assert _types("London office 020 7946 0958") == {"phone"}
        assert _types("office 415-555-2671") == set()
        with pytest.raises(ValueError, match="XX"):
            pii.configure_phone_regions(["XX"])
    finally:
        pii.configure_phone_regions(before)


def test_phone_regions_setting() -> None:
    assert config.phone_regions_from_env({}) == config.DEFAULT_PHONE_REGIONS
    env = {"GOVRIX_PII_PHONE_REGIONS": "us, gb,DE"}
    assert config.phone_regions_from_env(env) == ("US", "GB", "DE")
    with pytest.raises(config.ConfigError, match=r"GOVRIX_PII_PHONE_REGIONS.*ZZ"):
        config.phone_regions_from_env({"GOVRIX_PII_PHONE_REGIONS": "US,ZZ"})


# --- secrets: gitleaks rules, generic rule, placeholders ------------------------------------------


def _token(alphabet: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


@pytest.mark.parametrize(
    "text",
    [
        "GITLAB_TOKEN=glpat-" + _token(_ALNUM + "_-", 20, 1),
        "//registry.npmjs.org/:_authToken=npm_" + _token(_LOWER_ALNUM, 36, 2),
        "HF token hf_" + _token(string.ascii_letters, 34, 3),
        "SENDGRID SG." + _token(_ALNUM, 22, 4) + "." + _token(_ALNUM, 43, 5),
        "https://hooks.slack.com/services/T0"
        + _token(_ALNUM, 8, 6)
        + "/B0"
        + _token(_ALNUM, 8, 7)
        + "/"
        + _token(_ALNUM, 24, 8),
        "xoxp-" + "-".join(_token(string.digits, 12, 9 + i) for i in range(3)) + "-" + "a1" * 16,
        "stripe sk_live_" + _token(_ALNUM, 24, 12),
        "maps key AIza" + _token(_ALNUM + "_-", 35, 13),
        "aws_secret_access_key = " + _token(_ALNUM + "/+", 40, 14),
        'export AWS_SECRET_ACCESS_KEY="' + _token(_ALNUM + "/+", 40, 15) + '"',
        "db password: " + _token(_ALNUM + "#%!", 14, 16),
        '{"client_secret": "' + _token(_ALNUM, 32, 17) + '"}',
        "cloudflare_api_key = " + _token(_LOWER_ALNUM, 37, 18),
        "Authorization: Bearer " + _token(_ALNUM, 32, 19),
        "auth_token: Token " + _token(_ALNUM + "-_", 40, 20),
    ],
)
def test_vendor_and_generic_secrets(text: str) -> None:
    assert _types(text) == {"secret"}, text


@pytest.mark.parametrize(
    "text",
    [
        "api_key = xxxxxxxxxxxxxxxxxxxxxxxx",
        "OPENAI_API_KEY=sk-XXXXXXXXXXXXXXXXXXXXXXXX",
        "token: <your-api-key>",
        "Authorization: Bearer <token>",
        "Authorization: Bearer YOUR_ACCESS_TOKEN",
        "max_tokens: 4096",
        "password = ${DB_PASSWORD}",
        "password: changeme123",
        "secret_key = your_secret_key_here",
        "stripe sk_live_000000000000000000000000",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "glpat-xxxxxxxxxxxxxxxxxxxx",
        "password: hunter2",
        "the token: authentication happens upstream",
        "secret = process.env.DB_SECRET_VALUE",
        "Run git checkout 9fceb02d0ae598e95dc970b74767f19372d61af8 and rebuild.",
    ],
)
def test_placeholders_and_non_secrets(text: str) -> None:
    assert "secret" not in _types(text), text


def test_secret_redaction_keeps_the_variable_name() -> None:
    value = _token(_ALNUM, 32, 21)
    assert redact_text(f"client_secret={value} ok") == ("client_secret=[REDACTED:secret] ok", 1)


def test_gitleaks_rules_are_vendored_unmodified_and_mostly_used() -> None:
    version, commit = rules.gitleaks_source()
    assert version.startswith("v8.") and len(commit) == 40
    assert (rules.DATA / "gitleaks.LICENSE").read_text().startswith("MIT License")
    total = len(rules.config(rules.read("gitleaks.toml")).rules)
    # a rule joining a keyword form and a prefixed form is used by both detectors
    used = len({r.id for r in (*rules.RULES.vendor, *rules.RULES.assign)})
    local = len(rules.config(rules.read("local_rules.toml")).rules)
    dropped = dict(rules.DROPPED)
    assert used + len(dropped) == total + local
    assert len(dropped) <= 12, dropped
    assert "generic-api-key" in dropped  # replaced by the generic rule
    assert set(dropped.values()) <= {
        "matches file names only",
        "scoped to file paths a request does not have",
        "no literal prefix",
        "adapted in local_rules.toml",
        "replaced by the generic rule (secrets.py)",
    }


# --- classes of input: cards, phones, SSNs, vendor token formats, OIDs ------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # legacy and short lengths: a card when grouped like one or with a card word nearby
        ("4222 2222 2222 2", {"credit_card"}),  # 13-digit Visa, grouped 4-4-4-1
        ("4222-2222-22222", {"credit_card"}),  # 4-4-5
        ("card 4222222222222", {"credit_card"}),
        ("Please charge my credit card 4222222222222 today", {"credit_card"}),
        ("4222222222222 is the Visa on file", {"credit_card"}),
        ('{"cc_number": "4222222222222"}', {"credit_card"}),
        ("| sku | 4222222222222 |", set()),  # a bare 13-digit run: a barcode until marked
        ("213112345678904", {"credit_card"}),  # JCB's legacy 15-digit ranges stand alone
        ("1800 9876 5432 105", {"credit_card"}),
        ("3512 3456 7890 1236", {"credit_card"}),  # JCB's 35 block outside 3528-3589
        ("6759 6498 2648", {"credit_card"}),  # 12-digit Maestro, grouped
        ("675964982648", set()),  # ... bare: a UPC as likely
        ("maestro 675964982648", {"credit_card"}),
        ("0604 1234 5674", {"credit_card"}),  # Maestro's 0604 range
        ("IBAN SE37 2129 3359 6040 8010 4457", set()),  # the tail of longer groups
        ("Tarjeta 4222222222222", {"credit_card"}),
    ],
)
def test_card_classes(text: str, expected: set[str]) -> None:
    assert _types(text) == expected, text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # '+' numbers of any country: valid, or of a length the country uses
        ("+1 (283) 555-0143", {"phone"}),
        ("+44 29 2018 0000", {"phone"}),
        ("(+358) 40 1234567", {"phone"}),  # the country code in parentheses
        ("+52 (1) 55 1234 5678", {"phone"}),  # a trunk or mobile digit in parentheses
        ("+7 (912) 345-67-89", {"phone"}),
        ("+31 (0)20 123 4567", {"phone"}),
        ("0044 29 2018 0000", {"phone"}),
        ("+45 0123 4567", {"phone"}),  # a kept trunk 0: still '+' notation
        ("0045 0123 4567", set()),  # ... but not without the '+'
        ("id 0012345678901", set()),  # a bare 00 run: a padded id unless a phone word says so
        ("call 0012345678901", {"phone"}),
        # national formats of the default regions
        ("(351) 912345678", {"phone"}),  # a country code in parentheses without '+'
        ("8 (912) 345-67-89", {"phone"}),  # trunk 8, area code in parentheses
        ("Stockholm 08-123 456 78", {"phone"}),
        ("Bruxelles 02 123 45 67", {"phone"}),
        ("Rotterdam 010-1234567", {"phone"}),
        ("1-014-555-0199", {"phone"}),  # trunk 1 and NANP grouping
        ("phone 2345 6789", {"phone"}),  # 8-digit plans need a phone word
        ("years 2024 2025", set()),
        ("Tel. 030 1234567", {"phone"}),  # an abbreviation does not end the sentence
        ("Contact him. Order 4155552671", set()),  # a sentence does
        # a bare run with a phone word before it, or a phone noun after it
        ("ph: 4155552671", {"phone"}),
        ("you can reach me at 4155552671", {"phone"}),
        ("4155552671 is my cell", {"phone"}),
        ("4155552671 is my order", set()),
    ],
)
def test_phone_classes(text: str, expected: set[str]) -> None:
    assert _types(text) == expected, text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("social_security_number: 078051120", {"ssn"}),
        ("customer_ssn=078051120", {"ssn"}),
        ("Soc. Sec. No. 078051120", {"ssn"}),
        ("S.S.N. 078051120", {"ssn"}),
        ("078051120 is my SSN", {"ssn"}),
        ("The social security number we have on file for you is 078051120", {"ssn"}),
        ("078051120 is my order", set()),
        ("SSN 666051120", set()),
    ],
)
def test_ssn_classes(text: str, expected: set[str]) -> None:
    assert _types(text) == expected, text


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([("$.params.arguments.ssn", "078051120")], {"ssn"}),  # the key is the context
        ([("$.params.arguments.phone", "4155552671")], {"phone"}),
        (
            [
                ("$.messages[0].content[0].text", "my SSN is"),
                ("$.messages[0].content[1].text", "078051120"),
            ],
            {"ssn"},  # parts of one message read as one text
        ),
        ([("$.messages[0].content", "my SSN is"), ("$.messages[1].content", "078051120")], set()),
        ([("$.params.arguments.order_id", "078051120")], set()),
    ],
)
def test_segment_keys_and_message_parts_give_context(
    segments: list[tuple[str, str]], expected: set[str]
) -> None:
    assert {f.type for f in scan_segments(segments)} == expected


_HEX = "0123456789abcdef"


@pytest.mark.parametrize(
    "text",
    [
        # gitleaks' token end widened to prose, markdown, URLs and JSON text inside JSON
        "use sk_live_" + _token(_ALNUM, 24, 30) + ", then retry",
        "(dapi" + _token(_HEX, 32, 31) + ")",
        "**glsa_" + _token(_ALNUM, 32, 32) + "_" + _token(_HEX, 8, 33) + "**",
        json.dumps(
            json.dumps({"key": "PMAK-" + _token(_HEX, 24, 34) + "-" + _token(_HEX, 34, 35)})
        ),
        # the prefixed form of a rule that also has a keyword form (atlassian)
        "ATATT3" + _token(_ALNUM + "_-", 177, 36) + "=" + _token("0123456789ABCDEF", 8, 37),
        # a keyword rule whose own keyword is the secret's prefix counts without the name
        "NRAK-" + _token(string.ascii_uppercase + string.digits, 27, 38),
        # a keyword rule assigned in prose
        "my mailgun api key is key-" + _token(_HEX, 32, 39),
        "the aws secret access key is " + _token(_ALNUM + "/+", 40, 40),
        # formats gitleaks has no rule for (local_rules.toml)
        "https://discord.com/api/webhooks/"
        + _token(string.digits, 18, 41)
        + "/"
        + _token(_ALNUM + "_-", 68, 42),
        "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey="
        + _token(_ALNUM + "+/", 86, 43)
        + "==;EndpointSuffix=core.windows.net",
        "https://acme.blob.core.windows.net/c?sv=2022-11-02&sp=r&sig=" + _token(_ALNUM, 43, 44),
        "gsk_" + _token(_ALNUM, 52, 45),
        "dckr_pat_" + _token(_ALNUM + "_-", 27, 46),
        "r8_" + _token(_ALNUM, 37, 47),
        "key-" + _token(_HEX, 32, 48),
        _token(_HEX, 32, 49) + "-us14",
        _token(string.digits, 9, 50) + ":AA" + _token(_ALNUM + "_-", 33, 51),
    ],
)
def test_vendor_token_classes(text: str) -> None:
    assert Counter(m.type for m in scan_text(text)) == {"secret": 1}, text


@pytest.mark.parametrize(
    "text",
    [
        "the token is expired",
        "password was reset",
        "DefaultEndpointsProtocol=https;EndpointSuffix=core.windows.net",
        "key-value store",
        "locale en-us",
    ],
)
def test_vendor_token_look_alikes(text: str) -> None:
    assert "secret" not in _types(text), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the attribute 2.5.4.3 is CN", set()),
        ("objectIdentifier: 2.5.4.10", set()),
        ("arc 1.3.6.1 is internet", set()),
        ("OIDs: 2.5.4.6, 2.5.4.7", set()),
        ("snmpwalk host 1.3.6.1", set()),
        ('{"oid": "2.5.29.17"}', set()),
        ("host 1.3.6.2", {"ipv4"}),
        ("server 2.5.30.1", {"ipv4"}),
    ],
)
def test_oid_classes(text: str, expected: set[str]) -> None:
    assert _types(text) == expected, text


@settings(max_examples=300, deadline=None)
@given(value=st.binary(min_size=1, max_size=200), threshold=st.sampled_from([0.0, 2.0, 3.0, 4.5]))
def test_entropy_at_least_agrees_with_entropy(value: bytes, threshold: float) -> None:
    assert secrets.entropy_at_least(value, threshold) == (secrets.entropy(value) >= threshold)


# --- false-positive classes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '__version__ = "1.2.3.4"',
        "<Version>10.0.19041.1</Version> <FileVersion>4.8.1.0</FileVersion>",
        '[assembly: AssemblyVersion("1.0.0.0")]',
        '{"version": "2.1.0.7", "sdk_version": "3.0.0.1"}',
        "ver: '7.1.2.3'",
        "OID 2.5.4.3 is commonName; 1.2.840.113549.1.1.11 is sha256WithRSA",
        "urn:oid:2.16.840.1.101",
        "| EAN | 4006381333931 |\n| EAN | 5012345678900 |",
        "barcode 8712345678906",
        "git clone git@github.com:govrix/scout.git",
        "remote ssh://git@gitlab.example.com/group/repo.git",
        "git@bitbucket.org:team/repo",
    ],
)
def test_false_positive_classes(text: str) -> None:
    assert _types(text) == set(), text


def test_real_values_next_to_the_false_positive_classes_still_count() -> None:
    assert _types("server 10.0.0.1 runs version 1.2.3.4") == {"ipv4"}
    assert _types("mail git@github.com if needed") == {"email"}
    assert _types("card 4000 0566 5566 5556") == {"credit_card"}


# --- robustness ----------------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(doc=_JSON_VALUES)
def test_scanning_arbitrary_json_never_raises(doc: Any) -> None:
    text = json.dumps(doc)
    scan_json(doc)
    scan_segments([("$", text), ("$.a", json.dumps(text))])
    redacted, _ = redact_json(doc)
    json.dumps(redacted)


_PII_ALPHABET = st.sampled_from(
    [*'0123456789 -.+()@:/\\"{}[]nxtAZaz_=#é€\x00\n', "\\n", "sk-", "eyJ", "ghp_", "00"]
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), pieces=st.lists(_PII_ALPHABET, max_size=80))
def test_scanning_arbitrary_bytes_never_raises(data: bytes, pieces: list[str]) -> None:
    for text in (data.decode("utf-8", "surrogateescape"), "".join(pieces)):
        matches = scan_text(text)
        assert all(0 <= m.start < m.end <= len(text) for m in matches)
        scan_segments([("$", text)])
        redact_text(text)
        stream = StreamScanner(scan_every=7)
        for i in range(0, len(text), 5):
            stream.feed(text[i : i + 5])
        stream.findings("$")


# JSON text inside a string (tool arguments) is scanned as it is, and each finding is placed at
# the leaf that holds it, scanned with its own key: never a finding a scan of the decoded
# document does not make, and the same ones wherever a value needs no context to be found.
_SELF_EVIDENT = [
    "jane.doe@example.com",
    "078-05-1120",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "10.20.30.40",
    "GB82 WEST 1234 5698 7654 32",
    "n/a",
    "",
]
_NEEDS_CONTEXT = ["4155552671", "078051120", "version 1.2.3.4"]
_AROUND = (
    st.sampled_from(["", "note:\n", "see ", "Re: \t", 'said "']),
    st.sampled_from(["", " thanks", "\n\nbye", '" ok', "."]),
)
_KEYS = st.sampled_from(["body", "to", "phone", "ssn", "order", "ref", "x-id", "notes"])


def _documents(values: list[str], numbers: bool) -> st.SearchStrategy[dict[str, Any]]:
    text = st.builds(lambda a, v, b: f"{a}{v}{b}", _AROUND[0], st.sampled_from(values), _AROUND[1])
    leaf = text | st.integers(0, 10**10) if numbers else text
    tree = st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
        max_leaves=8,
    )
    return st.dictionaries(_KEYS, tree, min_size=1, max_size=4)


def _by_path(findings: list[Finding]) -> Counter[tuple[str, str]]:
    return Counter({(f.type, f.path): f.count for f in findings})


@settings(max_examples=200, deadline=None)
@given(doc=_documents(_SELF_EVIDENT + _NEEDS_CONTEXT, numbers=True))
def test_json_text_never_yields_a_finding_its_decoded_document_does_not(
    doc: dict[str, Any],
) -> None:
    as_text = _by_path(scan_segments([("$.args", json.dumps(doc))]))
    decoded = _by_path(scan_json(doc, "$.args"))
    assert as_text & decoded == as_text  # every (type, path) count within the decoded scan's


@settings(max_examples=200, deadline=None)
@given(doc=_documents(_SELF_EVIDENT, numbers=False))
def test_json_text_findings_land_on_the_leaves_a_decoded_scan_names(doc: dict[str, Any]) -> None:
    as_text = _by_path(scan_segments([("$.args", json.dumps(doc))]))
    assert as_text == _by_path(scan_json(doc, "$.args"))


def test_a_value_written_with_json_escapes_is_still_found_at_its_leaf() -> None:
    # "\u0040" is '@': the text scan sees no e-mail there, nor is it a leaf's substring; the
    # other value places, and the escaped one is left to the decoded document's own scan
    text = '{"a": {"to": "jane.doe\\u0040example.com"}, "b": "mail bob.roe@example.org"}'
    assert sorted(scan_segments([("$.x", text)]), key=lambda f: f.path) == [
        Finding(type="email", count=1, path="$.x.b")
    ]


_V6_TEXT = st.one_of(
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.text(alphabet="0123456789abcdefABCDEF:.g", min_size=2, max_size=45),
    st.lists(st.integers(0, 0x1FFFF).map(lambda n: format(n, "x")), min_size=1, max_size=9).map(
        ":".join
    ),
    st.tuples(
        st.lists(st.integers(0, 0xFFFF).map(lambda n: format(n, "x")), max_size=7),
        st.lists(
            st.sampled_from(["0", "1", "10", "01", "255", "256", "99"]), min_size=4, max_size=4
        ),
    ).map(lambda t: ":".join([*t[0], ".".join(t[1])])),
)


@settings(max_examples=3000, deadline=None)
@given(_V6_TEXT)
def test_ipv6_parser_agrees_with_ipaddress(text: str) -> None:
    """The C parser the IPv6 validator uses reads every text as ``ipaddress`` does (a libc
    that differs fails here)."""
    try:
        ipaddress.IPv6Address(text)
        expected = True
    except ValueError:
        expected = False
    assert validators.ipv6_parses(text) is expected
