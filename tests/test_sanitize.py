"""Every call is in the audit trail, whatever its bytes: NUL and lone surrogates are escaped.

Unit cases and a property over arbitrary text for addon/sanitize.py; then the real BatchWriter
into the real PostgreSQL (nothing dead-lettered, the chain verifies from the stored rows) and the
API showing the flag.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from psycopg.rows import dict_row

from addon import config as config_mod
from addon import ids
from addon.event import COLUMNS, Event
from addon.lineage import Chain, verify
from addon.recorder import Recorder
from addon.sanitize import escape, restore, sanitize, sanitized_copy, storable, utf8_len
from addon.writer import BatchWriter
from api.app import create_app
from tests.apiutil import AUTH, KEY, write_events

T0 = datetime(2026, 3, 5, 14, 20, tzinfo=UTC)


def event(i: int = 0, **kw: Any) -> Event:
    fields: dict[str, Any] = {
        "id": ids.event_id(),
        "agent_id": "agt_clean",
        "session_id": "ses_clean",
        "timestamp": T0 + timedelta(milliseconds=i),
        "direction": "request" if i % 2 == 0 else "response",
        "model": "gpt-4o",
    }
    return Event(**(fields | kw))


def strings(obj: Any) -> list[str]:
    """Every string in a value, JSON keys included."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*strings(k), *strings(v))]
    if isinstance(obj, list | tuple):
        return [s for v in obj for s in strings(v)]
    return []


def stored_rows(db: psycopg.Connection[Any], session_id: str) -> list[dict[str, Any]]:
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {cols} FROM events WHERE session_id = %s", (session_id,))
        return cur.fetchall()


def head(db: psycopg.Connection[Any], session_id: str) -> tuple[int, str]:
    row = db.execute("SELECT head_seq, head_hash FROM sessions WHERE id = %s", (session_id,))
    got = row.fetchone()
    assert got is not None
    return got[0], got[1]


# -- the escape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("gpt-4o\x00mini", "gpt-4o\\u0000mini"),
        ("\ud800", "\\ud800"),
        ("caf\xe9 \udfff!", "caf\xe9 \\udfff!"),
        ("C:\\dir\x00", "C:\\\\dir\\u0000"),  # backslashes doubled: the escape is exact
        ("\\u0000\x00", "\\\\u0000\\u0000"),
    ],
)
def test_escape_is_visible_and_exact(raw: str, stored: str) -> None:
    assert not storable(raw)
    assert escape(raw) == stored
    assert storable(stored) and stored.encode()
    assert restore(stored) == raw


@pytest.mark.parametrize(
    "s", ["", "gpt-4o", "caf\xe9", "\U0001f600 emoji", "\\u0000 literal", "\x01\x7f"]
)
def test_storable_text_is_left_alone(s: str) -> None:
    assert storable(s)
    ev = event(model=s, error=s, tool_calls=[{"name": s, s: 1}])
    tools = ev.tool_calls
    assert sanitize(ev) is ev
    assert ev.model is s and ev.tool_calls is tools and ev.sanitized is None
    assert sanitized_copy(ev) is None


def test_every_text_and_json_string_is_escaped_and_named() -> None:
    ev = event(
        agent_id="agt_\x00",
        session_id="ses_\ud800",
        model="gpt-4o\x00mini",
        provider="open\x00ai",
        endpoint="chat\udc80",
        compliance_tag="pci\x00",
        error="upstream said \ud800",
        parse_error="bad \x00 byte",
        host="api.openai.com\x00.evil",
        method="PO\x00ST",
        pii_types=["email", "x\x00"],
        pii_findings=[{"type": "email", "count": 1, "path": "$.a\x00"}],
        tool_calls=[
            {"name": "get\x00weather", "offered": True},
            {"name": "ok", "args\ud800": "v\udfff"},
        ],
        policy_decisions=[{"rule\x00": "r", "action": "tag"}],
    )
    policy = ev.policy_decisions
    assert sanitize(ev) is ev
    assert policy == [{"rule\x00": "r", "action": "tag"}]  # containers are replaced, not mutated
    assert ev.model == "gpt-4o\\u0000mini"
    assert ev.tool_calls == [
        {"name": "get\\u0000weather", "offered": True},
        {"name": "ok", "args\\ud800": "v\\udfff"},
    ]
    assert ev.policy_decisions == [{"rule\\u0000": "r", "action": "tag"}]
    assert ev.sanitized == {
        "agent_id": {"bytes": 5},
        "session_id": {"bytes": 7},
        "provider": {"bytes": 7},
        "endpoint": {"bytes": 7},
        "model": {"bytes": 11},
        "compliance_tag": {"bytes": 4},
        "pii_types[1]": {"bytes": 2},
        "pii_findings[0].path": {"bytes": 4},
        "tool_calls[0].name": {"bytes": 11},
        'tool_calls[1]["args\\\\ud800"]': {"key_bytes": 7, "bytes": 4},
        'policy_decisions[0]["rule\\\\u0000"]': {"key_bytes": 5},
        "error": {"bytes": 17},
        "parse_error": {"bytes": 10},
        "host": {"bytes": 20},
        "method": {"bytes": 5},
    }
    assert all(storable(s) for s in strings(msgspec.structs.astuple(ev)))
    Chain().seal(ev)  # hashable now (msgpack refuses surrogates)


def test_a_key_that_escapes_to_an_existing_key_keeps_both_members() -> None:
    ev = sanitize(event(tool_calls=[{"a\x00": 1, "a\\u0000": 2}]))
    assert ev.tool_calls == [{"a\\u0000_": 1, "a\\u0000": 2}]
    assert ev.sanitized == {'tool_calls[0]["a\\\\u0000_"]': {"key_bytes": 2}}


TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)


@settings(deadline=None, max_examples=300)
@given(model=TEXT, error=TEXT, key=TEXT, value=TEXT, agent=TEXT)
def test_any_text_becomes_storable_utf8_and_restores(
    model: str, error: str, key: str, value: str, agent: str
) -> None:
    tools = [{key: value, "name": value}]
    ev = sanitize(
        event(agent_id=agent, model=model, error=error, tool_calls=tools, pii_types=[key])
    )
    encoded = msgspec.json.encode(ev)  # raises on a surrogate
    encoded.decode("utf-8")
    assert b"\\u0000" not in encoded.replace(b"\\\\", b"")  # no NUL, only escaped backslashes
    assert all("\x00" not in s and storable(s) for s in strings(msgspec.structs.astuple(ev)))
    flags = ev.sanitized or {}
    for name, raw in (("agent_id", agent), ("model", model), ("error", error)):
        got = getattr(ev, name)
        if name in flags:
            assert restore(got) == raw and flags[name] == {"bytes": utf8_len(raw)}
        else:
            assert got == raw and storable(raw)
    assert ev.tool_calls is not None
    (call,) = ev.tool_calls
    restored = {}
    for k, v in call.items():
        path = (
            f"tool_calls[0].{k}"
            if k.isidentifier()
            else f"tool_calls[0][{msgspec.json.encode(k).decode()}]"
        )
        flag = flags.get(path, {})
        restored[restore(k) if "key_bytes" in flag else k] = restore(v) if "bytes" in flag else v
    assert restored == tools[0]
    Chain().seal(ev)


# -- the recorder chains what it stores -----------------------------------------------------------


def test_recorder_sanitises_before_it_chains() -> None:
    rec = Recorder(config_mod.load({}), reply=lambda _msg: None)
    ev = event(session_id="ses_nul", model="gpt\x00", tool_calls=[{"name": "t\ud800"}])
    rec._record(ev)
    assert ev.model == "gpt\\u0000" and ev.sanitized is not None
    assert ev.seq == 1 and ev.lineage_hash.startswith("sha256:")
    rows = [msgspec.to_builtins(ev) | {"timestamp": ev.timestamp}]
    assert verify("ses_nul", rows).valid


# -- through the real writer into PostgreSQL ------------------------------------------------------


def nasty_session(session_id: str, agent_id: str) -> list[Event]:
    """A session whose calls carry NUL and lone surrogates everywhere, chained as the recorder does."""
    chain = Chain()
    evs = [
        event(
            0,
            agent_id=agent_id,
            session_id=session_id,
            model="gpt-4o\x00mini",
            tool_calls=[
                {"name": "get\x00weather", "offered": True},
                {"name": "rm\ud800", "x\x00": 1},
            ],
            policy_decisions=[{"rule\ud800": "r\x00", "action": "tag"}],
            error="upstream said \ud800",
            parse_error="bad \x00 byte",
            host="api.openai.com",
            method="POST",
        ),
        event(1, agent_id=agent_id, session_id=session_id, model="gpt-4o"),
        event(2, agent_id=agent_id, session_id=session_id, model="\udfff", pii_types=["email\x00"]),
    ]
    return [chain.seal(sanitize(ev)) for ev in evs]


def test_nul_and_surrogates_reach_events_and_the_chain_verifies(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    evs = nasty_session("ses_\x00hidden\ud800", "agt_\x00")
    sid = evs[0].session_id
    assert sid == "ses_\\u0000hidden\\ud800"
    w = BatchWriter(dsn, tmp_path).start()
    for ev in evs:
        w.enqueue(ev)
    assert w.flush(30), w.stats.snapshot()
    w.stop()
    assert (w.stats.written, w.stats.rejected, w.stats.dropped) == (3, 0, 0)
    assert not (tmp_path / "deadletter.jsonl").exists()
    rows = {r["id"]: r for r in stored_rows(db, sid)}
    assert set(rows) == {e.id for e in evs}
    first = rows[evs[0].id]
    assert first["agent_id"] == "agt_\\u0000"
    assert first["model"] == "gpt-4o\\u0000mini"
    assert first["error"] == "upstream said \\ud800"
    assert first["parse_error"] == "bad \\u0000 byte"
    assert (first["host"], first["method"]) == ("api.openai.com", "POST")
    assert first["tool_calls"] == [
        {"name": "get\\u0000weather", "offered": True},
        {"name": "rm\\ud800", "x\\u0000": 1},
    ]
    assert first["policy_decisions"] == [{"rule\\ud800": "r\\u0000", "action": "tag"}]
    assert first["sanitized"] == {
        "agent_id": {"bytes": 5},
        "session_id": {"bytes": 14},
        "model": {"bytes": 11},
        "tool_calls[0].name": {"bytes": 11},
        "tool_calls[1].name": {"bytes": 5},
        'tool_calls[1]["x\\\\u0000"]': {"key_bytes": 2},
        'policy_decisions[0]["rule\\\\ud800"]': {"key_bytes": 7, "bytes": 2},
        "error": {"bytes": 17},
        "parse_error": {"bytes": 10},
    }
    assert rows[evs[1].id]["sanitized"] == {"agent_id": {"bytes": 5}, "session_id": {"bytes": 14}}
    assert rows[evs[2].id]["sanitized"]["pii_types[0]"] == {"bytes": 6}
    v = verify(sid, list(rows.values()), head(db, sid))
    assert v.valid and v.events_checked == 3, v


def test_the_writer_escapes_a_row_nobody_sanitised_instead_of_dead_lettering_it(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # An event chained raw (a spool from before sanitising) and one that was never chained: the
    # batch fails, settles row by row, and both rows land escaped and flagged.
    chain = Chain()
    clean = [chain.seal(event(i, session_id="ses_raw")) for i in range(4)]
    raw_nul = chain.seal(event(4, session_id="ses_raw", model="gpt\x00", tool_calls=[{"n\x00": 1}]))
    raw_surrogate = event(5, session_id="ses_unchained", error="\ud800", seq=1, prev_hash="p")
    w = BatchWriter(dsn, tmp_path).start()
    for ev in [*clean, raw_nul, raw_surrogate]:
        w.enqueue(ev)
    assert w.flush(30), w.stats.snapshot()
    w.stop()
    assert (w.stats.written, w.stats.rejected, w.stats.dropped) == (6, 0, 0)
    assert not (tmp_path / "deadletter.jsonl").exists()
    got = {r["id"]: r for r in stored_rows(db, "ses_raw")}
    assert got[raw_nul.id]["model"] == "gpt\\u0000"
    assert got[raw_nul.id]["sanitized"] == {
        "model": {"bytes": 4},
        'tool_calls[0]["n\\\\u0000"]': {"key_bytes": 2},
    }
    (unchained,) = stored_rows(db, "ses_unchained")
    assert unchained["error"] == "\\ud800" and unchained["sanitized"] == {"error": {"bytes": 3}}
    # the chain was taken over the raw text: the verifier says which row differs from it
    v = verify("ses_raw", list(got.values()))
    assert not v.valid and v.broken_event_id == raw_nul.id and "altered" in (v.reason or "")


def test_a_database_fault_still_goes_to_the_dead_letter_file_escaped(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    bad = event(0, direction="sideways", model="m\ud800")  # the CHECK refuses it, not its text
    w = BatchWriter(dsn, tmp_path).start()
    w.enqueue(bad)
    w.enqueue(event(1))
    assert w.flush(30), w.stats.snapshot()
    w.stop()
    assert (w.stats.written, w.stats.rejected, w.stats.dropped) == (1, 1, 0)
    (line,) = (tmp_path / "deadletter.jsonl").read_bytes().splitlines()
    dead = msgspec.json.decode(line)
    assert dead["event"]["id"] == bad.id and dead["event"]["model"] == "m\\ud800"


# -- the API shows the flag -----------------------------------------------------------------------


def test_api_returns_sanitised_event_with_its_flag(dsn: str, tmp_path: Path) -> None:
    evs = nasty_session("ses_api", "agt_api")
    write_events(dsn, evs, tmp_path)
    with TestClient(create_app(dsn, KEY)) as client:
        client.headers.update(AUTH)
        body = client.get(f"/api/v1/events/{evs[0].id}").json()
        assert body["model"] == "gpt-4o\\u0000mini"
        assert body["tool_calls"][0]["name"] == "get\\u0000weather"
        assert body["host"] == "api.openai.com" and body["method"] == "POST"
        assert body["sanitized"]["model"] == {"bytes": 11}
        assert body["sanitized"]["tool_calls[0].name"] == {"bytes": 11}
        assert body["sanitized"]["error"] == {"bytes": 17}
        assert client.get(f"/api/v1/events/{evs[1].id}").json()["sanitized"] is None
        listed = client.get("/api/v1/events", params={"session_id": "ses_api"}).json()
        assert {e["id"] for e in listed if e["sanitized"]} == {evs[0].id, evs[2].id}
        verdict = client.get("/api/v1/sessions/ses_api/verify").json()
        assert verdict["valid"] is True and verdict["events_checked"] == 3
