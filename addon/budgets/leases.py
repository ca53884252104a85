"""Leases of budget chunks: how much this proxy asks for, and how much the database grants.

A proxy admits a call only against budget it holds on lease (``budget_leases``), so instances
sharing a budget cannot all admit on a stale view: together they hold at most what is left. Pure
code: the ledger (``ledger.py``) computes an :class:`Ask` per usage key from its own state,
the sync (``sync.py``) answers it with :func:`grant` inside one locked transaction.

Amounts are pairs ``(tokens, micro-dollars)``; a metric no budget counts on a key is asked at 0
and never checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .specs import Key

#: A lease row counts for this long after the sync that wrote it (renewed at every sync, about
#: once a second): an instance that crashed, or lost the database, holds nothing after it.
LEASE_TTL = 5.0
#: This proxy stops admitting against a lease this much before the database stops counting it
#: (the two clocks measure the same seconds, not quite at the same rate).
LEASE_MARGIN = 1.0
#: The headroom asked for above what calls in flight hold: this fraction of the room nobody holds
#: (limit - settled - every lease), and at least the largest call refused for want of lease.
CHUNK_FRACTION = 0.25
#: A key that saw no call for this long keeps only one call's worth of headroom (the largest
#: call it saw, at most a chunk), so an idle instance does not sit on room another one needs.
LEASE_IDLE = 2.0
#: Top-ups asked for by demand (a call waiting, the lease below its watermark) are at least this
#: far apart: the database sees at most this many syncs per second per instance, whatever the
#: request rate.
MIN_GAP = 0.05

Pair = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Ask:
    """What this proxy asks for one key, after its settled usage has turned into spent.

    ``limit``: the tightest limit per metric (None: no budget counts that metric here).
    ``want``: calls in flight plus headroom. ``floor``: what it holds already and keeps (never
    more than it held, so keeping it cannot push the holders past the limit).
    """

    key: Key
    limit: tuple[int | None, int | None]
    want: Pair
    floor: Pair


def headroom(free: int, *, active: bool, short: int, biggest: int) -> int:
    """Headroom above calls in flight for one metric: a chunk of the ``free`` room (and room for
    ``short``, a call that waits for it) while the key is busy, one call's worth when idle."""
    chunk = math.ceil(CHUNK_FRACTION * max(free, 0))
    return max(chunk, short) if active else min(chunk, biggest)


def grant(ask: Ask, spent: Pair, others: Pair, *, live: bool) -> Pair:
    """The new lease: ``want``, capped by what nobody else holds (``limit - spent - others``:
    settled usage of every instance, the other instances' unexpired leases), never below the
    ``floor`` this proxy still holds, unless its row had expired (then it held nothing)."""
    out = []
    for m in range(2):
        floor = ask.floor[m] if live else 0
        limit = ask.limit[m]
        if limit is None:
            out.append(0)
            continue
        free = max(limit - spent[m] - others[m], 0)
        out.append(max(floor, min(ask.want[m], free)))
    return out[0], out[1]
