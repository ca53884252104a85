"""The state of one call while it passes the proxy: what every gate reads and writes.

Kept by the conductor under the flow's id (``flow.metadata`` must stay serializable: ``mitmdump
-w`` and mitmweb write it out; the metadata only gets the ids).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from addon import ids
from addon.budgets import Reservation
from addon.identity import Identity
from addon.mcp import CallFacts, summary
from addon.pii import Finding
from addon.providers import RequestInfo
from addon.route import OTHER, Route
from addon.tee import body_headers
from addon.wire import Begin, End
from api.scoring import ScoreResult


@dataclass(slots=True)
class Call:
    request_id: str  # the request event id
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
    #: What the inline score read that policies may test (``provenance``, ``destination``).
    risk_facts: CallFacts | None = None
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

    # -- what the recorder is handed --------------------------------------------------------------

    def begin(
        self,
        status_code: int | None,
        error: str | None,
        *,
        reserved: bool,
        bare: bool = False,
    ) -> Begin:
        """The request as captured (``status_code`` set: answered by the proxy itself). ``bare``:
        only what is certain to cross the pipe (the metadata, every text made storable)."""
        ident, route = self.identity, self.route
        keep_body = route.kind != OTHER and not bare
        return Begin(
            request_id=self.request_id,
            provider=route.provider_name,
            endpoint=storable(route.endpoint) if bare else route.endpoint,
            path=route.path,
            agent_id=ident.agent_id,
            agent_name=storable(ident.name) if bare else ident.name,
            identity_kind=ident.kind,
            source_ip=ident.source_ip,
            session_id=storable(self.session_id) if bare else self.session_id,
            started=self.started,
            body=self.body if keep_body else None,
            request_bytes=self.request_bytes,
            compliance_tag=self.compliance_tag,
            policy_decisions=[] if bare else self.policy_decisions,
            findings=self.findings if keep_body else [],
            tool_name=None if bare else self.tool_name,
            risk=summary(self.risk) if self.risk is not None and not bare else None,
            status_code=status_code,
            error=error,
            reserved=reserved,
            host=route.host,
            method=self.method,
        )

    def end(self, resp: http.Response | None, error: str | None) -> End:
        """The response or the error; with no response and no error hook (the proxy stopping),
        what the tee copied so far."""
        if resp is not None and not self.content_type and self.encoding is None:
            # no responseheaders hook ran (offline replay, a response made by another addon)
            self.content_type, self.encoding = body_headers(resp.headers.fields)
        body: bytes | None = None
        if self.route.kind == OTHER:  # metadata only
            size = self.response_bytes or (len(resp.raw_content or b"") if resp else 0)
        elif self.streamed or (resp is None and self.chunks):
            body = b"".join(self.chunks)
            self.chunks.clear()
            size = self.response_bytes
        elif resp is not None and error is None:
            body = resp.raw_content or b""
            size = len(body)
        else:
            size = self.response_bytes
        return End(
            request_id=self.request_id,
            status_code=resp.status_code if resp is not None else self.status_code,
            content_type=storable(self.content_type),
            encoding=storable(self.encoding) if self.encoding else None,
            body=body,
            response_bytes=size,
            first_byte=self.first_byte,
            response_start=resp.timestamp_start if resp is not None else None,
            end=(resp.timestamp_end if resp is not None else None) or time.time(),
            error=error,
            response_id=ids.event_id(),  # chosen here: the same id if it is ever resent
        )


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
