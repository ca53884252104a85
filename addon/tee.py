"""The response side of a call: which bodies are streamed, and the stream callable that copies them.

mitmproxy buffers a response body unless ``flow.response.stream`` is set in ``responseheaders``;
for SSE and the other streamed types we set it to a :class:`Tee`, which passes every chunk on
unchanged at once and hands a copy to the recorder in pieces of about ``CHUNK_FLUSH_BYTES``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from addon.wire import Chunk

if TYPE_CHECKING:
    from addon.call import Call

STREAM_TYPES = (
    "text/event-stream",
    "application/x-ndjson",
    "application/vnd.amazon.eventstream",
    "application/jsonl",
)

#: A streamed response's copy goes to the recorder in pieces of about this size.
CHUNK_FLUSH_BYTES = 256 * 1024


class Tee:
    """The stream callable: every chunk goes on unchanged, at once; the recorder gets a copy
    (``sink`` None: a host that is not an LLM or MCP, whose bytes are counted, never copied)."""

    __slots__ = ("call", "sink")

    def __init__(self, call: Call, sink: Any) -> None:
        self.call = call
        self.sink = sink

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            call = self.call
            if call.first_byte is None:
                call.first_byte = time.time()
            call.response_bytes += len(chunk)
            if self.sink is None:
                return chunk
            call.chunks.append(chunk)
            call.pending += len(chunk)
            if call.pending >= CHUNK_FLUSH_BYTES:
                self.sink.send(Chunk(call.request_id, b"".join(call.chunks)))
                call.chunks.clear()
                call.pending = 0
        return chunk


def is_streamed(content_type: str, stream_request: bool, status: int) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype in STREAM_TYPES or (stream_request and 200 <= status < 300)


def body_headers(fields: tuple[tuple[bytes, bytes], ...]) -> tuple[str, str | None]:
    """Content-Type ("" when absent) and Content-Encoding of a message, in one pass; repeated
    fields are joined with ", " as ``Headers.get`` does."""
    ctype: list[str] = []
    encoding: list[str] = []
    for name, value in fields:
        low = name.lower()
        if low == b"content-type":
            ctype.append(value.decode("latin-1"))
        elif low == b"content-encoding":
            encoding.append(value.decode("latin-1"))
    return ", ".join(ctype), ", ".join(encoding) or None


def decoded_content(msg: http.Message) -> bytes | None:
    """The decoded body, read once; None when its content-encoding is broken."""
    try:
        return msg.get_content(strict=True) or b""
    except ValueError:
        return None
