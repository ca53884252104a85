"""What the proxy keeps of each call until the recorder says its events are durable, and what a
successor recorder is handed when one dies (see the package docstring, ``addon/sinks``).

Only the messages of a call (``Begin``, ``Stream``, ``Chunk``, ``End``: ``KEYED``) are kept, as the
frames that were sent. Past ``MAX_RETAINED_BYTES`` kept in all, a call goes on without a copy
(``unguarded``): lost only if the recorder dies before its events are durable.
"""

from __future__ import annotations

import logging

import msgspec

from addon.wire import Begin, Chunk, Deframer, Durable, End, Stream, ToRecorder

log = logging.getLogger("govrix.channel")

#: Past this many bytes kept for calls the recorder has not made durable, a call's captures go
#: without a copy kept (counted, logged): lost only if the recorder dies before it writes them.
#: The same bound as the outbox's (``process.MAX_OUTBOX_BYTES``).
MAX_RETAINED_BYTES = 256 * 1024 * 1024

#: The messages that belong to one call (by ``request_id``), kept until it is durable.
KEYED = (Begin, Stream, Chunk, End)


class HeldCall:
    """The frames of one call, kept until the recorder says its events are durable."""

    __slots__ = ("frames", "request", "response", "size")

    def __init__(self, *, request: bool, response: bool) -> None:
        self.frames: list[bytes] | None = []  # None: sent without a copy (MAX_RETAINED_BYTES)
        self.size = 0
        self.request = request  # its request event is durable (or none will come)
        self.response = response  # its response event is, or it has none (answered by the proxy)

    @property
    def missing(self) -> int:
        """Events of this call not durable yet."""
        return (not self.request) + (not self.response)


class HeldCalls:
    """Every call not durable yet, by key, in the order calls began; ``size`` bytes kept."""

    def __init__(self) -> None:
        self.calls: dict[str, HeldCall] = {}
        self.size = 0
        self.unguarded = 0  # calls sent without a copy kept (MAX_RETAINED_BYTES)

    def __len__(self) -> int:
        return len(self.calls)

    def hold(self, msg: Begin | Stream | Chunk | End, data: bytes) -> None:
        """Keep a copy of ``data`` with its call until the recorder makes the call durable."""
        held = self.calls.get(msg.request_id)
        if held is None:
            if isinstance(msg, Begin):
                held = HeldCall(request=msg.recorded, response=msg.status_code is not None)
                if not held.missing:
                    return  # a refused call whose event is durable: nothing to keep
            else:  # its Begin went to a recorder before this one, and was not kept
                held = HeldCall(request=True, response=False)
            self.calls[msg.request_id] = held
        frames = held.frames
        if frames is None:
            return
        if self.size + len(data) > MAX_RETAINED_BYTES:
            self.size -= held.size
            held.frames = None
            held.size = 0
            self.unguarded += 1
            if self.unguarded == 1 or self.unguarded % 1000 == 0:
                log.error(
                    "recorder slow to make captures durable (%d bytes kept): call %s goes on "
                    "without a copy, lost if the recorder dies now (%d such calls so far)",
                    self.size,
                    msg.request_id,
                    self.unguarded,
                )
            return
        frames.append(data)
        held.size += len(data)
        self.size += len(data)

    def durable(self, msg: Durable) -> None:
        """Let go of the calls whose events are all durable now."""
        calls = self.calls
        for keys, response in ((msg.requests, False), (msg.responses, True)):
            for key in keys:
                h = calls.get(key)
                if h is None:
                    continue
                if response:
                    h.response = True
                else:
                    h.request = True
                if h.request and h.response:
                    del calls[key]
                    self.size -= h.size

    def missing(self) -> int:
        """Events not durable yet, of every call kept."""
        return sum(h.missing for h in self.calls.values())

    def handover(self) -> tuple[list[ToRecorder], int, list[str]]:
        """What a successor needs, in order (each ``Begin`` marked ``resent``), how many events
        nothing can bring back, and the keys of the calls they belong to."""
        waiting: list[ToRecorder] = []
        lost = 0
        lost_keys: list[str] = []
        for key, held in self.calls.items():
            if held.frames is None:
                lost += held.missing
                lost_keys.append(key)
                continue
            msgs: list[ToRecorder] = Deframer(ToRecorder).feed(b"".join(held.frames))
            if msgs and isinstance(msgs[0], Begin):
                msgs[0] = msgspec.structs.replace(msgs[0], resent=True, recorded=held.request)
            waiting += msgs
        return waiting, lost, lost_keys

    def clear(self) -> None:
        self.calls = {}
        self.size = 0
