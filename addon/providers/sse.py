"""Incremental Server-Sent Events splitter (WHATWG ``text/event-stream`` framing).

Works on bytes so a chunk boundary in the middle of a UTF-8 character is harmless: lines are cut
at ``\\n``, ``\\r\\n`` or ``\\r`` (a ``\\r`` ending one chunk and a ``\\n`` starting the next
count once), comments (``:`` lines) are skipped, several ``data:`` lines join with ``\\n``.
"""

from __future__ import annotations

from .base import MAX_FRAME_BYTES

#: One dispatched event: (event name, data bytes). The default event name is "message".
Event = tuple[str, bytes]


class SSESplitter:
    """Turns arbitrary byte chunks into complete SSE events."""

    __slots__ = ("_buf", "_data", "_event", "_skip_lf", "error")

    def __init__(self) -> None:
        self._buf = b""  # incomplete last line
        self._data: list[bytes] = []  # data lines of the event being built
        self._event = ""
        self._skip_lf = False  # previous chunk ended in \r: a leading \n belongs to it
        self.error: str | None = None

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished line or event are held."""
        return bool(self._buf) or bool(self._data)

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes; return the events they completed."""
        if self.error is not None or not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            if buf[-1:] == b"\r":
                self._skip_lf = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > MAX_FRAME_BYTES:
            self.error = f"SSE line longer than {MAX_FRAME_BYTES} bytes"
            self._buf = b""
            return []
        events: list[Event] = []
        for line in lines:
            self._line(line, events)
        return events

    def finish(self) -> list[Event]:
        """End of stream: an unterminated last line or event is still dispatched (lenient)."""
        events: list[Event] = []
        if self.error is not None:
            return events
        if self._buf:
            self._line(self._buf, events)
            self._buf = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._data:
                payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                events.append((self._event or "message", payload))
                self._data = []
            self._event = ""
            return
        if line[0] == 0x3A:  # ":" comment / keepalive
            return
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id" and "retry" do not matter to us; unknown fields are ignored per the spec.
