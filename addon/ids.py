"""Identifiers: ``evt_``/``ses_`` + ULID (time-ordered), ``agt_`` + a hash of the identity key.

ULIDs are Crockford base32, lowercased to match the seeds' examples; within one process they are
strictly increasing, also inside one millisecond, so ids sort like the events were created. They
are made on the proxy's hot path, so they are encoded ten bits at a time from a lookup table.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]  # 10 bits -> 2 chars
_SHIFTS_26 = tuple(range(120, -1, -10))  # 13 pairs = 26 chars = 130 bits
_MASK80 = (1 << 80) - 1
_MASK40 = (1 << 40) - 1
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_prefix_ms = -1
_prefix = ""
# Uniqueness comes from the millisecond plus 80 random bits (re-drawn each millisecond, then
# incremented); a PRNG seeded from the OS is enough for that and ~10x cheaper than os.urandom.
_rng = random.Random(os.urandom(32))


def _b32(value: int, length: int = 26) -> str:
    """The low 130 bits of ``value`` as 26 lowercase Crockford base32 characters."""
    assert length == 26
    pairs = _PAIRS
    return "".join([pairs[(value >> s) & 1023] for s in _SHIFTS_26])


def _time_chars(ms: int) -> str:
    """The ten time characters of a ULID: 50 bits of milliseconds, big-endian."""
    pairs = _PAIRS
    return (
        pairs[(ms >> 40) & 1023] + pairs[(ms >> 30) & 1023] + pairs[(ms >> 20) & 1023]
        + pairs[(ms >> 10) & 1023] + pairs[ms & 1023]
    )  # fmt: skip


def ulid(now_ms: int | None = None) -> str:
    """A 26-character monotonic ULID: 48-bit milliseconds + 80 random bits.

    Ten characters of time (kept while the millisecond lasts) and sixteen of randomness, each
    half encoded from small ints: a third cheaper than one 130-bit ``_b32``."""
    global _last_ms, _last_rand, _prefix_ms, _prefix
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    pairs = _PAIRS
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & _MASK80
        else:
            rand = _rng.getrandbits(80)
        _last_ms, _last_rand = ms, rand
        if ms != _prefix_ms:
            _prefix_ms, _prefix = ms, _time_chars(ms)
        prefix = _prefix
    hi, lo = rand >> 40, rand & _MASK40
    return "".join((
        prefix,
        pairs[hi >> 30], pairs[(hi >> 20) & 1023], pairs[(hi >> 10) & 1023], pairs[hi & 1023],
        pairs[lo >> 30], pairs[(lo >> 20) & 1023], pairs[(lo >> 10) & 1023], pairs[lo & 1023],
    ))  # fmt: skip


def ulid_time_ms(value: str) -> int:
    """The millisecond timestamp inside a ULID (with or without prefix); ValueError when its
    time characters are not lowercase Crockford base32."""
    body = value.rsplit("_", 1)[-1]
    n = 0
    for ch in body[:10]:
        n = (n << 5) | _ALPHABET.index(ch)
    return n


def ulid_floor(ms: int) -> str:
    """The smallest ULID of millisecond ``ms``: every ULID made at or after ``ms`` sorts above."""
    return _time_chars(max(0, ms)) + "0" * 16


def event_id() -> str:
    return "evt_" + ulid()


def session_id() -> str:
    return "ses_" + ulid()


def agent_id(identity_key: str) -> str:
    """Deterministic: every proxy instance derives the same id from the same identity key."""
    digest = int.from_bytes(hashlib.sha256(identity_key.encode()).digest()[:17], "big")
    return "agt_" + _b32(digest >> 6, 26)  # 130 bits -> 26 chars
