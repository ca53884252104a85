"""Incremental splitters for the non-SSE streaming bodies: NDJSON and a streamed JSON array.

Each returns complete JSON documents as bytes, in the same ``(event name, payload)`` shape as the
SSE splitter (the event name is always "message") so one handler serves both.
"""

from __future__ import annotations

import re

from .base import MAX_FRAME_BYTES
from .sse import Event


class NDJSONSplitter:
    """Newline-delimited JSON (Ollama): one document a line."""

    __slots__ = ("_buf", "error")

    def __init__(self) -> None:
        self._buf = b""
        self.error: str | None = None

    @property
    def pending(self) -> bool:
        """True when an unterminated line is held."""
        return bool(self._buf.strip())

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes; return the documents they completed."""
        if self.error is not None or not data:
            return []
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > MAX_FRAME_BYTES:
            self.error = f"NDJSON line longer than {MAX_FRAME_BYTES} bytes"
            self._buf = b""
        return [("message", line) for line in lines if line.strip()]

    def finish(self) -> list[Event]:
        """End of stream: a last line without newline is still returned."""
        rest, self._buf = self._buf.strip(), b""
        return [("message", rest)] if rest and self.error is None else []


# Backslash pairs are one token so escaped quotes never toggle the string state.
_JSON_TOKENS = re.compile(rb'\\.|["{}\[\]]', re.DOTALL)


class JSONArraySplitter:
    """A JSON array of objects arriving in pieces (Gemini ``streamGenerateContent`` without SSE).

    Scans only structural characters with one regex per chunk, keeping the bytes of the current
    element; the closing ``]`` marks a complete stream.
    """

    __slots__ = ("_buf", "_depth", "_in_str", "_scan", "_start", "closed", "error")

    def __init__(self) -> None:
        self._buf = b""
        self._scan = 0  # next offset in _buf to scan
        self._start = -1  # offset of the current element's "{", -1 between elements
        self._depth = 0  # nesting of [] and {} outside strings; the array itself is depth 1
        self._in_str = False
        self.closed = False
        self.error: str | None = None

    @property
    def pending(self) -> bool:
        """True when part of an element is held."""
        return self._start >= 0

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes; return the elements they completed."""
        if self.error is not None or self.closed or not data:
            return []
        self._buf += data
        buf = self._buf
        out: list[Event] = []
        end = self._scan
        depth, in_str, start = self._depth, self._in_str, self._start
        for m in _JSON_TOKENS.finditer(buf, self._scan):
            end = m.end()
            tok = buf[m.start()]
            if tok == 0x5C:  # backslash pair
                continue
            if tok == 0x22:  # "
                in_str = not in_str
                continue
            if in_str:
                continue
            if tok in (0x7B, 0x5B):  # { [
                depth += 1
                if depth == 2 and tok == 0x7B:
                    start = m.start()
            else:
                depth -= 1
                if depth == 1 and start >= 0:
                    out.append(("message", buf[start:end]))
                    start = -1
                elif depth == 0:
                    self.closed = True
                    break
                elif depth < 0:
                    self.error = "unbalanced JSON array stream"
                    break
        # A lone trailing backslash has not been paired yet: rescan it with the next chunk.
        if end < len(buf) and buf.endswith(b"\\") and in_str and not self.closed:
            tail = len(buf) - 1
        else:
            tail = len(buf)
        # Drop bytes nobody needs any more, keeping offsets consistent.
        cut = start if start >= 0 else tail
        self._buf = buf[cut:]
        self._scan = tail - cut
        self._start = 0 if start >= 0 else -1
        self._depth, self._in_str = depth, in_str
        if len(self._buf) > MAX_FRAME_BYTES:
            self.error = f"JSON array element longer than {MAX_FRAME_BYTES} bytes"
            self._buf = b""
        return out

    def finish(self) -> list[Event]:
        """End of stream: nothing more can complete."""
        return []
