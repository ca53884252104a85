"""Tests for the PII/secret scanner (addon/pii.py)."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import phonenumbers
import pytest

from addon.pii import (
    PII_TYPES,
    Finding,
    Match,
    StreamScanner,
    _valid_number,
    json_segments,
    redact_json,
    redact_text,
    scan_segments,
    scan_text,
)

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
        ("key sk-ant-api03-" + "Xy9" * 10, {"secret"}),
        ("scikit sk-learn-compatible-estimator-api", set()),
        ("sk-support-team-lead@example.com", {"email"}),
        ("AKIAIOSFODNN7EXAMPLE", {"secret"}),
        ("ASIAY34FZKBOKMUTVV7A", {"secret"}),
        ("gho_16C7e42F292c6912E7710c838347Ae178B4a", {"secret"}),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", {"secret"}),
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
    """addon/pii.py re-implements is_valid_number for speed; it must give the same answers."""
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
        assert _valid_number(code, nsn) == expected, (code, nsn)
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
        Finding(type="email", count=1, path="$.tools_args[2].arguments"),
        Finding(type="ipv4", count=1, path="$.tools_args[2].arguments"),
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
