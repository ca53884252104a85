"""Where a request goes: an LLM provider, an MCP server, or some other host.

A pure question of the request line, the Host header and (for MCP) the JSON-RPC method: the
answer decides which gates read the body, never whether the kill switch applies (it applies to
every host). ``Router.route`` cannot raise: anything it cannot read is routed as ``other``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import http

from addon.mcp import MCP
from addon.providers import Provider, detect

log = logging.getLogger("govrix.route")

LLM = "llm"
MCP_CALL = "mcp"
OTHER = "other"

#: The endpoint of a call to another host is its path (no query), cut at this many characters.
MAX_PATH = 512
#: (host, path) pairs whose provider is remembered; past this, the memory starts over.
DETECT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Route:
    """``kind`` is LLM, MCP_CALL or OTHER; ``provider`` is None for OTHER, whose ``endpoint`` is
    the path (the request target's authority for a CONNECT)."""

    kind: str
    provider: Provider | None
    endpoint: str
    host: str  # as the agent named it (the Host header for an address target), lowercased
    port: int
    path: str  # without the query string

    @property
    def provider_name(self) -> str:
        return self.provider.name if self.provider is not None else OTHER


class Router:
    """Provider detection, remembered per (host, path): a fleet calls few distinct pairs, and
    ``detect`` walks host suffixes and path patterns every time."""

    def __init__(self, openai_compatible_hosts: dict[str, str]) -> None:
        self.compatible = openai_compatible_hosts
        self._detected: dict[tuple[str, str], tuple[Provider, str] | None] = {}

    def detect(self, host_port: str, path: str) -> tuple[Provider, str] | None:
        key = (host_port, path)
        try:
            return self._detected[key]
        except KeyError:
            pass
        found = detect(host_port, path, self.compatible)
        if len(self._detected) >= DETECT_CACHE_SIZE:  # paths with ids in them: start over
            self._detected.clear()
        self._detected[key] = found
        return found

    def target(
        self, req: http.Request, get: Callable[[str], str | None], sni: str | None = None
    ) -> tuple[str, int, str]:
        """(host, port, path without query) as the agent named them."""
        host = req.host
        if not host or host[0].isdigit() or ":" in host:
            # an address (transparent mode, or an IP target): the Host header names it, else
            # the TLS SNI (no Host header, or one that is an address too)
            host = host_name(get("host")) or req.pretty_host
            if sni and is_address(host):
                host = sni
        return host.lower(), req.port, req.path.split("?", 1)[0]

    def route(
        self, req: http.Request, host: str, port: int, path: str, found: tuple[Provider, str] | None
    ) -> Route:
        if found is not None:
            return Route(LLM, found[0], found[1], host, port, path)
        if is_mcp_call(req):
            return Route(MCP_CALL, MCP, "tools/call", host, port, path)
        return Route(OTHER, None, path[:MAX_PATH], host, port, path)


def is_address(host: str) -> bool:
    """An IPv4 or IPv6 literal (bracketed or not), or nothing."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return not host
    return True


def host_port(host: str, port: int) -> str:
    """``host``, with the port when it is not a default one (what ``detect`` keys on)."""
    return host if port in (80, 443) else f"{host}:{port}"


def is_mcp_call(req: http.Request) -> bool:
    """An MCP ``tools/call`` over HTTP: any JSON-RPC POST body that names the method (raw or
    content-decoded)."""
    if req.method != "POST" or "json" not in req.headers.get("content-type", ""):
        return False
    raw = req.raw_content or b""
    if b"tools/call" in raw:
        return True
    if not req.headers.get("content-encoding"):
        return False
    try:
        decoded = req.get_content(strict=True) or b""
    except ValueError:
        return False
    return b"tools/call" in decoded


def host_name(authority: str | None) -> str | None:
    """The host of a plain ``name[:port]`` Host header, as ``Request.pretty_host`` reads it;
    None for what needs its full parser (IPv6, IDNA, none)."""
    if not authority or "[" in authority or "xn--" in authority or not authority.isascii():
        return None
    name, sep, port = authority.rpartition(":")
    if not sep:
        return authority
    return name if port.isdigit() and ":" not in name else None
