"""Who is calling, and in which session (DESIGN.md §3). Pure code over headers and addresses.

Agent, first match wins: proxy credentials (user name), ``X-Govrix-Agent`` (aliases ``X-Agent-ID``,
``x-govrix-scout-agent-id``), a keyed hash of the provider API key (never its characters), the
source IP. The id is ``agt_`` + a hash of the identity key, so every proxy instance derives the
same id without coordination.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable

import msgspec

from addon import ids

AGENT_HEADERS = ("x-govrix-agent", "x-agent-id", "x-govrix-scout-agent-id")
SESSION_HEADERS = (
    "x-govrix-session",
    "x-session-id",
    "session-id",
    "x-claude-code-session-id",
    "helicone-session-id",
    "x-litellm-session-id",
    "langfuse-session-id",
    "x-portkey-trace-id",
)
# Where provider API keys travel: header -> value prefix to strip.
_KEY_HEADERS = (
    ("authorization", "bearer "),
    ("x-api-key", ""),
    ("api-key", ""),
    ("x-goog-api-key", ""),
)
# Our own headers that never go upstream (besides every ``x-govrix-*``).
STRIP_HEADERS = ("proxy-authorization", "x-agent-id")
_MAX_NAME = 128


class Identity(msgspec.Struct, frozen=True, gc=False):
    agent_id: str
    name: str
    kind: str  # "proxy_auth" | "header" | "api_key" | "source_ip"
    source_ip: str | None


def parse_proxy_authorization(value: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` -> (user, password); None when absent or malformed."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def _clean(name: str) -> str:
    return "".join(ch for ch in name.strip() if ch.isprintable())[:_MAX_NAME]


class Identifier:
    """Resolves identities; caches the keyed API-key hashes (the same few keys every request)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._key_cache: dict[str, str] = {}
        self._id_cache: dict[str, str] = {}

    def _agent_id(self, key: str) -> str:
        aid = self._id_cache.get(key)
        if aid is None:
            if len(self._id_cache) > 50_000:
                self._id_cache.clear()
            aid = self._id_cache[key] = ids.agent_id(key)
        return aid

    def _key_digest(self, api_key: str) -> str:
        digest = self._key_cache.get(api_key)
        if digest is None:
            if len(self._key_cache) > 10_000:
                self._key_cache.clear()
            digest = hmac.new(
                self._secret, api_key.encode("utf-8", "surrogateescape"), hashlib.sha256
            ).hexdigest()[:32]
            self._key_cache[api_key] = digest
        return digest

    def identify(
        self,
        get_header: Callable[[str], str | None],
        proxy_user: str | None,
        source_ip: str | None,
        query_key: str | None = None,
    ) -> Identity:
        if proxy_user:
            name = _clean(proxy_user)
            if name:
                return Identity(self._agent_id("name:" + name), name, "proxy_auth", source_ip)
        for h in AGENT_HEADERS:
            v = get_header(h)
            if v and (name := _clean(v)):
                return Identity(self._agent_id("name:" + name), name, "header", source_ip)
        for h, prefix in _KEY_HEADERS:
            v = get_header(h)
            if v:
                if prefix and v[: len(prefix)].lower() == prefix:
                    v = v[len(prefix) :]
                v = v.strip()
                if v:
                    d = self._key_digest(v)
                    return Identity(
                        self._agent_id("key:" + d), "key-" + d[:8], "api_key", source_ip
                    )
        if query_key:
            d = self._key_digest(query_key)
            return Identity(self._agent_id("key:" + d), "key-" + d[:8], "api_key", source_ip)
        ip = source_ip or "unknown"
        return Identity(self._agent_id("ip:" + ip), ip, "source_ip", source_ip)


def vendor_session(get_header: Callable[[str], str | None]) -> str | None:
    """A session id the client chose (ours or a common vendor header), or None."""
    for h in SESSION_HEADERS:
        v = get_header(h)
        if v:
            v = _clean(v)
            if v:
                return v if v.startswith("ses_") else "ses_" + v
    return None


class Sessions:
    """One implicit session per agent, rolled over after ``idle_seconds`` without traffic."""

    def __init__(self, idle_seconds: float = 1800.0) -> None:
        self.idle_seconds = idle_seconds
        self._current: dict[str, tuple[str, float]] = {}

    def resolve(self, agent_id: str, now: float, explicit: str | None = None) -> tuple[str, bool]:
        """(session_id, is_new) for an agent's request at monotonic time ``now``."""
        if explicit:
            return explicit, False
        cur = self._current.get(agent_id)
        if cur is not None and now - cur[1] <= self.idle_seconds:
            self._current[agent_id] = (cur[0], now)
            return cur[0], False
        sid = ids.session_id()
        self._current[agent_id] = (sid, now)
        return sid, True


_WANTED = frozenset(
    n.encode()
    for n in (
        *AGENT_HEADERS,
        *SESSION_HEADERS,
        *(h for h, _ in _KEY_HEADERS),
        "proxy-authorization",
        "content-encoding",  # the proxy's: whether the body must be decoded before parsing
        "host",  # names the provider when the request targets an address (transparent mode)
    )
)
_STRIP = frozenset(n.encode() for n in STRIP_HEADERS)


def scan_headers(
    fields: tuple[tuple[bytes, bytes], ...],
) -> tuple[Callable[[str], str | None], tuple[tuple[bytes, bytes], ...] | None]:
    """One pass over raw header fields (the hot path reads ~20 names; a lookup each would walk
        every header each time). Returns a getter for the names identity and sessions read (and
    ``content-encoding``), and the
        fields without ours (``x-govrix-*``, proxy credentials, ``x-agent-id``), or None when there
        was nothing to strip."""
    found: dict[str, str] = {}
    drop = False
    for name, value in fields:
        low = name.lower()
        if low in _WANTED:
            key = low.decode("latin-1")
            if key not in found:  # first occurrence wins, as Headers.get does
                found[key] = value.decode("utf-8", "surrogateescape")
        if low in _STRIP or low.startswith(b"x-govrix"):
            drop = True
    kept = None
    if drop:
        kept = tuple(
            (n, v)
            for n, v in fields
            if not (n.lower() in _STRIP or n.lower().startswith(b"x-govrix"))
        )
    return found.get, kept
