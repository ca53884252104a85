"""What the proxy's hot path hands to the recorder: raw captures of each call, as messages.

The hooks (``addon/proxy.py``) only identify, enforce and capture; parsing, PII scanning of what
is not needed inline, pricing, tool-call scoring, the lineage chain and the database writer run in
the recorder (``addon/recorder/``), by default in a child process of mitmdump so that they do
not share the event loop's GIL. The two talk through pipes in frames of msgpack-encoded messages,
a 4-byte big-endian length before each.

Proxy -> recorder: ``Begin`` (a call was forwarded or refused), ``Stream`` / ``Chunk`` (a streamed
response and copies of its bytes), ``End`` (the response or the error), ``AgentSeen`` (an agent was
seen), ``Score`` (an inline MCP score). Per call, messages arrive in that order: the pipe is FIFO.

Recorder -> proxy: ``Settle`` (the real usage of a call, for its budget reservation), ``ToolHistory``
(tool actions for the inline scorer's history), ``ToolOutput`` (what an MCP tool result left
for the provenance facts: salted digests only), ``Durable`` (which calls' events are committed or
spooled) and ``Stats`` (progress and metric samples).

Durability: the proxy keeps a copy of every message of a call until ``Durable`` names the call's
last event (``addon/sinks/``); when a recorder dies, its successor is sent those copies again,
the ``Begin`` marked ``resent`` (and ``recorded`` when its request event is durable already). The
response event's id comes from ``End.response_id`` when the proxy sets it, so a resent call
produces the same rows and the writer's ``ON CONFLICT DO NOTHING`` keeps one of each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from addon.pii import Finding


class Begin(msgspec.Struct, tag="b", array_like=True, gc=False, kw_only=True):
    """A call the proxy recorded at ingress. ``status_code`` set: the proxy answered it itself."""

    request_id: str  # the request event id; every later message of the call names it
    provider: str
    endpoint: str
    path: str
    agent_id: str
    agent_name: str
    identity_kind: str
    source_ip: str | None
    session_id: str
    started: float  # epoch seconds at ingress
    body: bytes | None  # as forwarded; None when it could not be decoded
    encoding: str | None = None  # content-encoding still applied to ``body``
    request_bytes: int
    compliance_tag: str = "default"
    policy_decisions: list[dict[str, Any]] = []
    findings: list[Finding] | None = None  # None: the recorder scans the request itself
    tool_name: str | None = None
    risk: dict[str, Any] | None = None
    status_code: int | None = None
    error: str | None = None
    reserved: bool = False  # a budget reservation waits for this call's ``Settle``
    host: str | None = None  # the host the call went to (as the agent named it)
    method: str | None = None  # its HTTP method
    #: Sent again, to a recorder that replaced one that died: its events may be stored already,
    #: so they fork from the session's genesis and never become a chain head (addon/lineage.py).
    resent: bool = False
    #: ... and its request event is durable already: only reopen the call for its ``End``.
    recorded: bool = False


class Stream(msgspec.Struct, tag="s", array_like=True, gc=False):
    """The response is streamed: copies of its bytes follow in ``Chunk`` and ``End.body``."""

    request_id: str
    content_type: str
    encoding: str | None


class Chunk(msgspec.Struct, tag="c", array_like=True, gc=False):
    request_id: str
    data: bytes


class End(msgspec.Struct, tag="e", array_like=True, gc=False, kw_only=True):
    """The call is over: its response (raw, still content-encoded) or the error."""

    request_id: str
    status_code: int | None
    content_type: str = ""
    encoding: str | None = None
    body: bytes | None = None  # buffered: the raw body; streamed: the bytes after the last Chunk
    response_bytes: int = 0
    first_byte: float | None = None
    response_start: float | None = None
    end: float
    error: str | None = None
    #: The response event's id, chosen by the proxy so that a resend produces the same row;
    #: None: the recorder makes one (a resend then may store a second response event).
    response_id: str | None = None


class AgentSeen(msgspec.Struct, tag="a", array_like=True, gc=False):
    agent_id: str
    name: str
    source_ip: str | None
    identity_kind: str
    last_seen_at: datetime


class Score(msgspec.Struct, tag="r", array_like=True, gc=False):
    """An inline score computed by the proxy (MCP): the ``actions`` and ``scores`` rows."""

    agent_id: str
    action_name: str
    action: list[Any]
    score: list[Any]


#: ``Settle.tokens`` of a call that succeeded without reporting its usage: settle at the bound.
UNKNOWN_USAGE = -1


class Settle(msgspec.Struct, tag="S", array_like=True, gc=False):
    request_id: str
    tokens: int  # UNKNOWN_USAGE: the reservation stands as the spend
    usd: float | None


class ToolHistory(msgspec.Struct, tag="W", array_like=True, gc=False):
    agent_id: str
    actions: list[str]


class ToolOutput(msgspec.Struct, tag="O", array_like=True, gc=False):
    """What a session's MCP tool result left behind: salted token digests (the proxy's salt,
    ``GOVRIX_FLOW_SALT``) and whether it carried instruction cues; never its text."""

    agent_id: str
    session_id: str
    digests: list[str]
    instruction: bool


class Durable(msgspec.Struct, tag="D", array_like=True, gc=False):
    """Calls (by key) whose request / response event is durable: committed to PostgreSQL, in the
    spool file, or in the dead-letter file. A message the recorder could not turn into an event (an
    error it logged and counted as a hook error) is named too: sent again, it would fail again."""

    requests: list[str]
    responses: list[str]


class Stats(msgspec.Struct, tag="T", array_like=True, gc=False):
    """Progress of the recorder: messages handled so far, and its metrics (exposition text)."""

    handled: int
    metrics: bytes


ToRecorder = Begin | Stream | Chunk | End | AgentSeen | Score
ToProxy = Settle | ToolHistory | ToolOutput | Durable | Stats

_encoder = msgspec.msgpack.Encoder()


def frame(msg: ToRecorder | ToProxy) -> bytes:
    payload = _encoder.encode(msg)
    return len(payload).to_bytes(4, "big") + payload


class Deframer:
    """Splits a byte stream into messages of one direction."""

    __slots__ = ("_buf", "_decoder")

    def __init__(self, kind: Any) -> None:
        self._buf = bytearray()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(kind)

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos, n = 0, len(buf)
        decode = self._decoder.decode
        with memoryview(buf) as view:
            while n - pos >= 4:
                size = int.from_bytes(view[pos : pos + 4], "big")
                if n - pos - 4 < size:
                    break
                out.append(decode(view[pos + 4 : pos + 4 + size]))
                pos += 4 + size
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
