"""addon/identity.py: who is calling and in which session (DESIGN.md §3), as tables over inputs.

Precedence: proxy-user > X-Govrix-Agent (and aliases) > keyed API-key hash > source IP. Headers
arrive as raw bytes, so non-UTF-8 values and arbitrary header lists are part of the input space.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon import ids
from addon.identity import (
    AGENT_HEADERS,
    Identifier,
    Sessions,
    parse_proxy_authorization,
    scan_headers,
    vendor_session,
)

AGENT_ID = re.compile(r"^agt_[0-9a-hjkmnp-tv-z]{26}$")
SECRET = b"test-secret"


def ident(
    headers: dict[str, str] | None = None,
    proxy_user: str | None = None,
    ip: str | None = "10.0.0.7",
    query_key: str | None = None,
    secret: bytes = SECRET,
) -> tuple[str, str, str]:
    """(kind, name, agent_id) of one request."""
    h = {k.lower(): v for k, v in (headers or {}).items()}
    got = Identifier(secret).identify(h.get, proxy_user, ip, query_key)
    assert got.source_ip == ip
    assert AGENT_ID.match(got.agent_id), got.agent_id
    return got.kind, got.name, got.agent_id


def key_name(key: str, secret: bytes = SECRET) -> str:
    return ident({"x-api-key": key}, secret=secret)[1]


# (case, headers, proxy user, source ip, query key, expected kind, expected name)
PRECEDENCE = [
    ("proxy user beats all", {"x-govrix-agent": "hdr", "authorization": "Bearer sk-1"}, "alice",
     "10.0.0.1", "qk", "proxy_auth", "alice"),
    ("header beats api key", {"x-govrix-agent": "billing", "x-api-key": "sk-1"}, None,
     "10.0.0.1", None, "header", "billing"),
    ("x-govrix-agent beats aliases", {"x-agent-id": "b", "x-govrix-scout-agent-id": "c",
     "x-govrix-agent": "a"}, None, None, None, "header", "a"),
    ("x-agent-id beats scout alias", {"x-govrix-scout-agent-id": "c", "x-agent-id": "b"}, None,
     None, None, "header", "b"),
    ("scout alias alone", {"x-govrix-scout-agent-id": "c"}, None, None, None, "header", "c"),
    ("empty proxy user falls through", {"x-govrix-agent": "hdr"}, "", None, None, "header",
     "hdr"),
    ("unprintable proxy user falls through", {"x-govrix-agent": "hdr"}, "\x00\x1b\u200b",
     None, None, "header", "hdr"),
    ("blank header falls through", {"x-govrix-agent": "  \t", "x-api-key": "sk-1"}, None, None,
     None, "api_key", None),
    ("api key beats source ip", {"authorization": "Bearer sk-1"}, None, "10.0.0.9", None,
     "api_key", None),
    ("bearer with nothing after it", {"authorization": "Bearer   ", "x-api-key": "sk-2"}, None,
     None, None, "api_key", None),
    ("query key", {}, None, "10.0.0.9", "AIza-query", "api_key", None),
    ("header key beats query key", {"x-goog-api-key": "AIza-h"}, None, None, "AIza-q",
     "api_key", None),
    ("source ip last", {"content-type": "application/json"}, None, "10.0.0.9", None,
     "source_ip", "10.0.0.9"),
    ("no source ip at all", {}, None, None, None, "source_ip", "unknown"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "headers", "user", "ip", "qk", "kind", "name"),
    PRECEDENCE,
    ids=[c[0] for c in PRECEDENCE],
)
def test_precedence(
    case: str,
    headers: dict[str, str],
    user: str | None,
    ip: str | None,
    qk: str | None,
    kind: str,
    name: str | None,
) -> None:
    got_kind, got_name, _ = ident(headers, user, ip, qk)
    assert got_kind == kind
    if name is not None:
        assert got_name == name
    if kind == "api_key":
        assert re.fullmatch(r"key-[0-9a-f]{8}", got_name)


def test_same_name_same_id_whatever_the_channel() -> None:
    """A proxy user and a header with the same name are one agent, on any proxy instance."""
    by_user = ident(proxy_user="billing")[2]
    by_header = ident({"x-govrix-agent": " billing "})[2]
    other_instance = ident({"x-agent-id": "billing"}, secret=b"another-secret")[2]
    assert by_user == by_header == other_instance == ids.agent_id("name:billing")


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer sk-live-123"},
        {"authorization": "bearer sk-live-123"},
        {"authorization": "BEARER   sk-live-123  "},
        {"x-api-key": "sk-live-123"},
        {"api-key": " sk-live-123"},
        {"x-goog-api-key": "sk-live-123"},
    ],
)
def test_api_key_is_one_agent_whatever_the_header(headers: dict[str, str]) -> None:
    kind, name, agent = ident(headers)
    assert (kind, name, agent) == ident({"x-api-key": "sk-live-123"})
    assert "live" not in name and "live" not in agent


def test_api_key_hash_is_keyed_and_never_the_key() -> None:
    assert key_name("sk-a") != key_name("sk-b")
    assert key_name("sk-a") != key_name("sk-a", secret=b"other")  # keyed: not a plain sha256
    assert "sk-a" not in key_name("sk-a")


def test_non_utf8_headers() -> None:
    """Raw header bytes that are not UTF-8 identify an agent; unprintables never reach the name."""
    fields = ((b"X-Govrix-Agent", b"\xffbot\xfe"), (b"Host", b"api.openai.com"))
    get, kept = scan_headers(fields)
    assert ident({"x-govrix-agent": get("x-govrix-agent") or ""})[:2] == ("header", "bot")
    assert kept == ((b"Host", b"api.openai.com"),)
    # Two API keys that differ only in invalid bytes are two agents.
    a, _ = scan_headers(((b"x-api-key", b"sk-\xff"),))
    b, _ = scan_headers(((b"x-api-key", b"sk-\xfe"),))
    assert key_name(a("x-api-key") or "") != key_name(b("x-api-key") or "")
    # Only invalid bytes: nothing printable, so the next rule decides.
    only, _ = scan_headers(((b"x-govrix-agent", b"\xff\xfe"),))
    assert ident({"x-govrix-agent": only("x-govrix-agent") or ""})[0] == "source_ip"


def test_scan_headers_first_wins_and_strips_ours() -> None:
    fields = (
        (b"X-Agent-ID", b"first"),
        (b"x-agent-id", b"second"),
        (b"X-Govrix-Session", b"s1"),
        (b"Proxy-Authorization", b"Basic eDp5"),
        (b"Authorization", b"Bearer sk"),
        (b"Accept", b"*/*"),
    )
    get, kept = scan_headers(fields)
    assert get("x-agent-id") == "first"
    assert get("accept") is None  # not a name identity reads
    assert kept == ((b"Authorization", b"Bearer sk"), (b"Accept", b"*/*"))
    assert scan_headers(((b"Accept", b"*/*"),))[1] is None  # nothing to strip


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        (basic(b"alice:tok"), ("alice", "tok")),
        (basic(b"alice:"), ("alice", "")),
        (basic(b"alice:p:w"), ("alice", "p:w")),
        ("  basic " + base64.b64encode(b"bob:x").decode() + " ", ("bob", "x")),
        (basic(b"alice"), None),  # no colon
        (basic(b":tok"), None),  # no user
        (basic(b"\xff:tok"), None),  # not UTF-8
        ("Basic !!!not-base64", None),
        ("Basic", None),
        ("Bearer " + base64.b64encode(b"alice:tok").decode(), None),
    ],
)
def test_parse_proxy_authorization(value: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_proxy_authorization(value) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"x-govrix-session": "ses_abc"}, "ses_abc"),
        ({"x-govrix-session": "abc"}, "ses_abc"),
        ({"x-session-id": "v", "x-govrix-session": "ours"}, "ses_ours"),
        ({"helicone-session-id": "h1", "x-claude-code-session-id": "c1"}, "ses_c1"),
        ({"x-govrix-session": "  ", "x-session-id": "v"}, "ses_v"),
        ({"x-govrix-session": "\x00\x01"}, None),
    ],
)
def test_vendor_session(headers: dict[str, str], expected: str | None) -> None:
    assert vendor_session(headers.get) == expected


def test_implicit_sessions_roll_over_after_idle() -> None:
    s = Sessions(idle_seconds=10)
    first, new = s.resolve("agt_a", now=0.0)
    assert new and first.startswith("ses_")
    assert s.resolve("agt_a", now=9.0) == (first, False)
    assert s.resolve("agt_a", now=19.0) == (first, False)  # activity keeps it alive
    second, new = s.resolve("agt_a", now=29.5)
    assert new and second != first
    assert s.resolve("agt_b", now=29.5)[0] not in (first, second)  # one per agent
    assert s.resolve("agt_a", now=1e9, explicit="ses_x") == ("ses_x", False)


header_name = st.one_of(
    st.sampled_from(
        [n.encode() for n in (*AGENT_HEADERS, "x-govrix-session", "authorization", "x-api-key")]
        + [b"Proxy-Authorization", b"X-Govrix-Anything", b"host", b"accept"]
    ),
    st.binary(min_size=1, max_size=20),
)
fields_strategy = st.lists(st.tuples(header_name, st.binary(max_size=60)), max_size=12).map(tuple)


@settings(max_examples=300, deadline=None)
@given(
    fields=fields_strategy,
    user=st.none() | st.text(max_size=40),
    ip=st.none() | st.text(max_size=40),
)
def test_any_headers_identify_without_raising(
    fields: tuple[tuple[bytes, bytes], ...], user: str | None, ip: str | None
) -> None:
    get, kept = scan_headers(fields)
    got = Identifier(SECRET).identify(get, user, ip)
    assert AGENT_ID.match(got.agent_id)
    assert got.kind in ("proxy_auth", "header", "api_key", "source_ip")
    assert len(got.name) <= 128
    if got.kind != "source_ip":
        assert got.name and got.name.isprintable()
    for name, _ in kept if kept is not None else fields:
        low = name.lower()
        assert not low.startswith(b"x-govrix") and low not in (
            b"proxy-authorization",
            b"x-agent-id",
        )
    sid = vendor_session(get)
    assert sid is None or (sid.startswith("ses_") and sid.isprintable())
