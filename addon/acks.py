"""The recorder's side of durability: which call each event in its writer belongs to, and which
calls' events became durable since it last told the proxy (``Durable`` in ``addon/wire.py``).

The writer calls ``durable`` from its own thread (or from the recorder's, when ``enqueue``
spools); the recorder's main loop takes the answer with ``take`` and sends it. ``wake`` is called
once per answer that becomes ready, so a loop asleep in ``select`` can wake at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from addon.wire import Durable

log = logging.getLogger("govrix.acks")

#: Events the writer has not reported past this many (only events it dropped never are: the
#: spool's disk refused them) are forgotten, oldest first; the proxy then keeps their calls
#: until the recorder dies or stops, and counts them there.
MAX_AWAITED = 200_000


class Acks:
    """Event id -> (call key, is the response); durable ones collected for the next ``Durable``."""

    __slots__ = ("_events", "_lock", "_requests", "_responses", "_woken", "forgotten", "wake")

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, tuple[str, bool]] = {}
        self._requests: list[str] = []
        self._responses: list[str] = []
        self._woken = False
        self.wake = wake
        self.forgotten = 0

    def expect(self, event_id: str, key: str, *, response: bool) -> None:
        """``event_id`` goes to the writer next; it is the request or response event of ``key``."""
        with self._lock:
            events = self._events
            if len(events) >= MAX_AWAITED:
                del events[next(iter(events))]
                self.forgotten += 1
                if self.forgotten == 1 or self.forgotten % 1000 == 0:
                    log.error(
                        "%d events never reported durable by the writer: forgetting the oldest "
                        "(%d so far)",
                        MAX_AWAITED,
                        self.forgotten,
                    )
            events[event_id] = (key, response)

    def durable(self, event_ids: list[str]) -> None:
        """The writer's callback: these events are committed, spooled or dead-lettered."""
        with self._lock:
            pop = self._events.pop
            for event_id in event_ids:
                got = pop(event_id, None)
                if got is not None:
                    (self._responses if got[1] else self._requests).append(got[0])
            wake = self._ready_locked()
        if wake is not None:
            wake()

    def give_up(self, key: str, *, response: bool) -> None:
        """No event will come of this part of ``key`` (an error the recorder logged)."""
        with self._lock:
            (self._responses if response else self._requests).append(key)
            wake = self._ready_locked()
        if wake is not None:
            wake()

    def _ready_locked(self) -> Callable[[], None] | None:
        if self._woken or not (self._requests or self._responses):
            return None
        self._woken = True
        return self.wake

    def take(self) -> Durable | None:
        """What became durable since the last call, or None."""
        with self._lock:
            self._woken = False
            if not (self._requests or self._responses):
                return None
            out = Durable(self._requests, self._responses)
            self._requests, self._responses = [], []
            return out

    @property
    def awaited(self) -> int:
        return len(self._events)
