"""Identifiers: ``evt_``/``ses_`` + ULID (time-ordered), ``agt_`` + a hash of the identity key.

ULIDs are Crockford base32, lowercased to match the seeds' examples; within one process they are
strictly increasing, also inside one millisecond, so ids sort like the events were created.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def ulid(now_ms: int | None = None) -> str:
    """A 26-character monotonic ULID: 48-bit milliseconds + 80 random bits."""
    global _last_ms, _last_rand
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = ms, rand
    return _b32((ms << 80) | rand, 26)


def ulid_time_ms(value: str) -> int:
    """The millisecond timestamp inside a ULID (with or without prefix)."""
    body = value.rsplit("_", 1)[-1]
    n = 0
    for ch in body[:10]:
        n = (n << 5) | _ALPHABET.index(ch)
    return n


def event_id() -> str:
    return "evt_" + ulid()


def session_id() -> str:
    return "ses_" + ulid()


def agent_id(identity_key: str) -> str:
    """Deterministic: every proxy instance derives the same id from the same identity key."""
    digest = int.from_bytes(hashlib.sha256(identity_key.encode()).digest()[:17], "big")
    return "agt_" + _b32(digest >> 6, 26)  # 130 bits -> 26 chars
