"""The lineage chain: sealing, verification from rows, tampering named, forks accepted."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from addon import ids
from addon.event import COLUMNS, Event
from addon.lineage import Chain, genesis, verify


def ev(session: str, i: int, **kw: Any) -> Event:
    return Event(
        id=ids.event_id(),
        agent_id="agt_x",
        session_id=session,
        timestamp=datetime(2026, 3, 5, 14, 20, tzinfo=UTC) + timedelta(milliseconds=i),
        direction="request" if i % 2 == 0 else "response",
        model="gpt-4o",
        **kw,
    )


def event_values(e: Event) -> dict[str, Any]:
    """Every stored column of an event, by name: what a row read back holds."""
    return {name: getattr(e, name) for name in COLUMNS}


def rows(events: list[Event]) -> list[dict[str, Any]]:
    # what PostgreSQL gives back: plain values, JSON re-decoded
    return [
        msgspec.json.decode(msgspec.json.encode(event_values(e))) | {"timestamp": e.timestamp}
        for e in events
    ]


def test_untouched_chain_verifies() -> None:
    chain = Chain()
    events = [
        chain.seal(ev("ses_a", i, pii_findings=[{"type": "email", "count": 1, "path": "$.x"}]))
        for i in range(6)
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == genesis("ses_a")
    assert all(b.prev_hash == a.lineage_hash for a, b in itertools.pairwise(events))
    v = verify("ses_a", rows(events))
    assert v.valid and v.events_checked == 6 and v.head_hash == events[-1].lineage_hash


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("completion_tokens", 999),
        ("model", "gpt-3.5"),
        ("cost_usd", 1.0),
        ("compliance_tag", "x"),
        ("pii_types", ["ssn"]),
        ("timestamp", datetime(2020, 1, 1, tzinfo=UTC)),
        ("pii_findings", []),
    ],
)
def test_any_altered_column_names_the_event(column: str, value: Any) -> None:
    chain = Chain()
    events = [chain.seal(ev("ses_b", i)) for i in range(5)]
    data = rows(events)
    data[2][column] = value
    v = verify("ses_b", data)
    assert not v.valid and v.broken_event_id == events[2].id and v.broken_seq == 3


def test_deleted_middle_event_is_found() -> None:
    chain = Chain()
    events = [chain.seal(ev("ses_c", i)) for i in range(5)]
    data = rows(events)
    del data[2]
    v = verify("ses_c", data)
    assert (
        not v.valid
        and v.broken_event_id == events[3].id
        and "links to no earlier event" in (v.reason or "")
    )


def test_forks_from_two_writers_verify() -> None:
    a, b = Chain(), Chain()
    events = [a.seal(ev("ses_d", 0)), b.seal(ev("ses_d", 1)), a.seal(ev("ses_d", 2))]
    assert verify("ses_d", rows(events)).valid


def test_head_cache_is_bounded_and_evicted_sessions_fork_cleanly() -> None:
    chain = Chain(max_sessions=3)
    first = [chain.seal(ev("ses_old", 0))]
    for n in range(5):
        chain.seal(ev(f"ses_{n}", 0))
    later = chain.seal(ev("ses_old", 1))
    assert later.seq == 1 and later.prev_hash == genesis("ses_old")
    assert verify("ses_old", rows([*first, later])).valid


def test_deleted_tail_is_found_through_the_recorded_head() -> None:
    chain = Chain()
    events = [chain.seal(ev("ses_t", i)) for i in range(4)]
    head = (events[-1].seq, events[-1].lineage_hash)
    assert verify("ses_t", rows(events), head).valid
    v = verify("ses_t", rows(events[:-1]), head)
    assert not v.valid and v.broken_seq == 4 and "deleted" in (v.reason or "")


def test_chains_stored_before_the_added_columns_still_verify() -> None:
    # The hash as it was before host/method/sanitized existed: every other column, in order.
    import hashlib

    from addon.event import ADDED_COLUMNS, COLUMNS
    from addon.lineage import canonical_bytes

    old_columns = [c for c in COLUMNS if c not in ADDED_COLUMNS and c != "lineage_hash"]
    chain = Chain()
    e = chain.seal(ev("ses_v1", 0, tool_calls=[{"name": "t"}]))
    values = event_values(e)
    old = [values[c] for c in old_columns]
    old[old_columns.index("timestamp")] = (
        e.timestamp - datetime(1970, 1, 1, tzinfo=UTC)
    ) // timedelta(microseconds=1)
    old[old_columns.index("tool_calls")] = msgspec.json.encode(e.tool_calls)
    assert canonical_bytes(values) == msgspec.msgpack.encode(old)
    digest = hashlib.sha256(e.prev_hash.encode() + msgspec.msgpack.encode(old)).hexdigest()
    assert e.lineage_hash == "sha256:" + digest


@pytest.mark.parametrize(
    ("column", "before", "after"),
    [
        ("host", None, "evil.example"),
        ("host", "api.openai.com", None),
        ("method", "POST", "GET"),
        ("sanitized", {"model": {"bytes": 4}}, None),
        ("sanitized", None, {"model": {"bytes": 4}}),
    ],
)
def test_added_columns_are_covered_set_or_not(column: str, before: Any, after: Any) -> None:
    chain = Chain()
    events = [chain.seal(ev("ses_h", i, **{column: before})) for i in range(3)]
    assert verify("ses_h", rows(events)).valid
    data = rows(events)
    data[1][column] = after
    v = verify("ses_h", data)
    assert not v.valid and v.broken_event_id == events[1].id
