"""The state of one call while it passes the proxy: what every gate reads and writes.

Kept by the conductor under the flow's id (``flow.metadata`` must stay serializable: ``mitmdump
-w`` and mitmweb write it out; the metadata only gets the ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from addon.budgets import Reservation
from addon.identity import Identity
from addon.pii import Finding
from addon.providers import RequestInfo
from addon.route import Route
from api.scoring import ScoreResult


@dataclass(slots=True)
class Call:
    key: str  # the request event id
    identity: Identity
    session_id: str
    started: float  # wall clock, request ingress
    method: str
    route: Route
    request_bytes: int
    #: The body as it will be forwarded, content-decoded; None when its encoding is broken.
    body: bytes | None = None
    #: Parsed only when a gate or streaming needs it (the recorder parses the rest).
    info: RequestInfo | None = None
    #: The request's PII findings once a gate scanned it; None: the recorder scans.
    findings: list[Finding] | None = None
    compliance_tag: str = "default"
    policy_decisions: list[dict[str, Any]] = field(default_factory=list)
    reservation: Reservation | None = None
    begun: bool = False  # its Begin went to the recorder
    held: bool = False  # waiting (intercepted) for budget room
    redact: bool = False  # a policy rule asked for the request's PII to be redacted
    tool_name: str | None = None
    rpc_id: Any = None
    risk: ScoreResult | None = None
    # -- the response side
    status_code: int | None = None  # once its headers came
    content_type: str = ""  # of the response, read once in ``responseheaders``
    encoding: str | None = None  # ... and its content-encoding
    streamed: bool = False
    chunks: list[bytes] = field(default_factory=list)
    pending: int = 0
    first_byte: float | None = None
    response_bytes: int = 0
    hook_seconds: float = 0.0
    done: bool = False

    @property
    def parse_error(self) -> str | None:
        """Why the body could not be read, when a gate needed it and it could not."""
        if self.body is None:
            return "undecodable request body (content-encoding)"
        return self.info.parse_error if self.info is not None else None


def storable(text: str) -> str:
    """``text`` as valid UTF-8: what mitmproxy decoded with surrogateescape (a path or a Host
    with bytes that are not UTF-8) is shown as ``\\xNN`` escapes. Captures cross a pipe as
    msgpack, which refuses lone surrogates."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that is not an escaped byte
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")
    return text
