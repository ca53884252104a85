"""The response side of a call: which bodies are streamed, and the stream callable that copies them.

mitmproxy buffers a response body unless ``flow.response.stream`` is set in ``responseheaders``;
there :func:`attach` sets it, for SSE and the other streamed types, to a :class:`Tee`, which
passes every chunk on unchanged at once and hands a copy to the recorder in pieces of about
``CHUNK_FLUSH_BYTES`` (another host's body is counted, never copied). A buffered body reaches the
recorder whole, with the ``End`` made in the ``response`` hook (``Call.end``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from addon.route import OTHER
from addon.wire import Chunk, Stream

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


def attach(call: Call, resp: http.Response, sink: Any) -> None:
    """At the response's headers: note them on the call, and tee the body when it is streamed
    (``sink``: the recorder, told the stream's type first)."""
    call.status_code = resp.status_code
    call.content_type, call.encoding = body_headers(resp.headers.fields)
    if call.route.kind == OTHER:
        resp.stream = Tee(call, None)  # bytes counted, never copied nor buffered
        call.streamed = True
        return
    stream_request = call.info is not None and call.info.stream
    if is_streamed(call.content_type, stream_request, resp.status_code):
        ctype = call.content_type.split(";", 1)[0].strip().lower()
        sink.send(Stream(call.request_id, ctype, call.encoding))
        call.streamed = True
        resp.stream = Tee(call, sink)


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
