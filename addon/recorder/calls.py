"""A call the recorder holds between its ``Begin`` and its ``End``: what was parsed of its
request, and the parser (and PII scanner) its streamed response is fed through chunk by chunk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from addon import metrics, pii
from addon.providers import Provider, RequestInfo, StreamParser
from addon.wire import Begin, Stream

log = logging.getLogger("govrix.recorder")

#: Calls whose End never came (a proxy that lost track of a flow) are forgotten past this many.
MAX_OPEN_CALLS = 100_000
#: Bytes of a streamed MCP response kept to read its tool results.
MAX_MCP_BODY = 512 * 1024


@dataclass(slots=True)
class OpenCall:
    """A call between its ``Begin`` and its ``End``."""

    begin: Begin
    provider: Provider
    info: RequestInfo
    compliance_tag: str
    policy_decisions: list[dict[str, Any]]
    parser: StreamParser | None = None
    scanner: pii.StreamScanner | None = None
    streamed: bool = False
    resent: bool = False  # its events may be stored already: they fork off the chain
    #: A streamed MCP response's bytes (bounded), read for its tool results at the end.
    mcp_body: bytearray | None = None


def ts(epoch: float) -> datetime:
    """Epoch seconds as an aware UTC datetime (an event's ``timestamp``)."""
    return datetime.fromtimestamp(epoch, UTC)


def decode_body(body: bytes | None, encoding: str | None) -> bytes | None:
    """``body`` without its content-encoding; None when the encoding is broken or unknown."""
    if body is None or not encoding or not body:
        return body
    from mitmproxy.net import encoding as enc

    try:
        out = enc.decode(body, encoding)
    except ValueError:
        return None
    return out if isinstance(out, bytes) else None


def open_stream(call: OpenCall, m: Stream, *, pii_scan: bool) -> None:
    """The response is streamed: parse it (and scan its text) as its chunks come."""
    parser = call.provider.stream_parser(call.begin.endpoint, m.content_type, m.encoding)
    if pii_scan:
        scanner = pii.StreamScanner()
        call.scanner = scanner
        parser.text_delta_callback = scanner.feed
    call.parser = parser
    call.streamed = True
    if call.provider.name == "mcp":
        call.mcp_body = bytearray()


def feed(call: OpenCall, data: bytes) -> None:
    """Bytes of the streamed response; a parser that fails is dropped, the call still recorded."""
    if call.mcp_body is not None and len(call.mcp_body) < MAX_MCP_BODY:
        call.mcp_body += data[: MAX_MCP_BODY - len(call.mcp_body)]
    if call.parser is None or not data:
        return
    try:
        call.parser.feed(data)
    except Exception:  # the stream went through anyway; record what we have
        metrics.child(metrics.HOOK_ERRORS, "stream").inc()
        log.exception("stream parser failed; the rest of the stream is not parsed")
        call.parser = None
