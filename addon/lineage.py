"""Tamper evidence: each session is a hash chain over its events (DESIGN.md §5).

``lineage_hash = "sha256:" + hex(sha256(prev_hash || canonical_bytes(event)))``. The canonical
bytes are a msgpack array of every stored column except ``lineage_hash``, in column order, with the
timestamp as integer microseconds and JSON columns re-encoded with sorted keys, so that the same
bytes come out of the proxy's Struct and out of a row read back from PostgreSQL. The first event's
``prev_hash`` is ``"sha256:" + hex(sha256(session_id))``.

Columns added after the first schema (``ADDED_COLUMNS``, the tail of the column order) are hashed
only up to the last one that is set: an event whose added columns are all null hashes exactly as
before they existed, so chains stored earlier still verify, while setting, clearing or changing
any of them changes the hash (the array's length is part of the encoding).

Pure code: used by the proxy (to chain) and by the API (to verify), importing neither.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from addon.event import ADDED_COLUMNS, COLUMNS, JSON_COLUMNS, Event

_HASHED = tuple(c for c in COLUMNS if c != "lineage_hash")
_BASE = len(_HASHED) - len(ADDED_COLUMNS)  # always hashed; the rest up to the last set one
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_msgpack = msgspec.msgpack.Encoder()
_json_sorted = msgspec.json.Encoder(order="sorted")


def genesis(session_id: str) -> str:
    return "sha256:" + hashlib.sha256(session_id.encode()).hexdigest()


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def canonical_bytes(values: Mapping[str, Any]) -> bytes:
    """The fixed-order encoding of one event's stored fields (all but lineage_hash)."""
    out: list[Any] = []
    for name in _HASHED:
        v = values[name]
        if name == "timestamp":
            v = _micros(v)
        elif name in JSON_COLUMNS and v is not None:
            v = _json_sorted.encode(v)
        elif name == "pii_types" and v is not None:
            v = list(v)
        out.append(v)
    while len(out) > _BASE and out[-1] is None:
        out.pop()
    return _msgpack.encode(out)


def link(prev_hash: str, values: Mapping[str, Any]) -> str:
    h = hashlib.sha256(prev_hash.encode())
    h.update(canonical_bytes(values))
    return "sha256:" + h.hexdigest()


_TS = COLUMNS.index("timestamp")
_LINEAGE = COLUMNS.index("lineage_hash")
_JSON_IDX = tuple(i for i, c in enumerate(COLUMNS) if c in JSON_COLUMNS)


def _link_event(ev: Event) -> str:
    """``link`` for a Struct on the hot path: same bytes as ``canonical_bytes``, from a tuple."""
    vals = list(msgspec.structs.astuple(ev))
    vals[_TS] = _micros(vals[_TS])
    for i in _JSON_IDX:
        if vals[i] is not None:
            vals[i] = _json_sorted.encode(vals[i])
    del vals[_LINEAGE]
    while len(vals) > _BASE and vals[-1] is None:
        vals.pop()
    h = hashlib.sha256(ev.prev_hash.encode())
    h.update(_msgpack.encode(vals))
    return "sha256:" + h.hexdigest()


class Chain:
    """Per-session chain heads kept by one proxy; ``seal`` sets seq, prev_hash, lineage_hash.

    At most ``max_sessions`` heads are kept (least recently used go first), so memory stays
    bounded on a proxy that runs for months. A session that comes back after its head was evicted
    starts a new branch from the genesis hash: the verifier accepts it (chains are DAGs), and
    ``seq`` restarts, which the verifier orders by ``(seq, id)``.
    """

    __slots__ = ("_heads", "max_sessions")

    def __init__(self, max_sessions: int = 200_000) -> None:
        self._heads: collections.OrderedDict[str, tuple[int, str]] = collections.OrderedDict()
        self.max_sessions = max_sessions

    def seal(self, ev: Event) -> Event:
        heads = self._heads
        seq, prev = heads.get(ev.session_id, (0, ""))
        ev.seq = seq + 1
        ev.prev_hash = prev or genesis(ev.session_id)
        ev.lineage_hash = _link_event(ev)
        heads[ev.session_id] = (ev.seq, ev.lineage_hash)
        heads.move_to_end(ev.session_id)
        if len(heads) > self.max_sessions:
            heads.popitem(last=False)
        return ev

    def branch(self, ev: Event) -> Event:
        """``seal`` for an event that may be stored already (a capture sent again to a recorder
        that replaced one that died): it forks from the genesis and does not become the head, so
        no later event points at a row that the duplicate insert did not store."""
        seq, _ = self._heads.get(ev.session_id, (0, ""))
        ev.seq = seq + 1
        ev.prev_hash = genesis(ev.session_id)
        ev.lineage_hash = _link_event(ev)
        return ev


class Verdict(msgspec.Struct, kw_only=True):
    """The outcome of verifying one session's chain."""

    session_id: str
    valid: bool
    events_checked: int
    broken_event_id: str | None = None
    broken_seq: int | None = None
    reason: str | None = None
    head_hash: str | None = None


def verify(
    session_id: str, rows: Iterable[Mapping[str, Any]], recorded_head: tuple[int, str] | None = None
) -> Verdict:
    """Recompute a session's chain from database rows alone, in ``seq`` order.

    Every row's hash is recomputed from its stored columns (so a changed column shows), and its
    ``prev_hash`` must be the genesis hash or the ``lineage_hash`` of an earlier row (a DAG:
    concurrent writers may fork a chain). The first row that fails is named.

    ``recorded_head`` is ``(head_seq, head_hash)`` from the ``sessions`` table, written in the same
    transaction as the events: when that event is gone, the tail of the chain was deleted (which
    the chain alone cannot show).
    """
    ordered = sorted(rows, key=lambda r: (r["seq"], r["id"]))
    seen: set[str] = {genesis(session_id)}
    head: str | None = None
    for n, row in enumerate(ordered, start=1):
        if row["session_id"] != session_id:
            return _broken(session_id, n, row, "row belongs to another session")
        expected = link(row["prev_hash"], row)
        if expected != row["lineage_hash"]:
            return _broken(
                session_id, n, row, "lineage_hash does not match the row's contents (altered)"
            )
        if row["prev_hash"] not in seen:
            return _broken(
                session_id, n, row, "prev_hash links to no earlier event (missing or reordered)"
            )
        seen.add(row["lineage_hash"])
        head = row["lineage_hash"]
    if recorded_head is not None and recorded_head[1] and recorded_head[1] not in seen:
        return Verdict(
            session_id=session_id,
            valid=False,
            events_checked=len(ordered),
            broken_seq=recorded_head[0],
            reason=f"the recorded chain head (seq {recorded_head[0]}) is missing: events were deleted",
        )
    return Verdict(session_id=session_id, valid=True, events_checked=len(ordered), head_hash=head)


def _broken(session_id: str, n: int, row: Mapping[str, Any], reason: str) -> Verdict:
    return Verdict(
        session_id=session_id,
        valid=False,
        events_checked=n,
        broken_event_id=row["id"],
        broken_seq=row["seq"],
        reason=reason,
    )
