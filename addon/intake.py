"""Every request's first steps: where it goes, who is calling, and the call opened for them.

Steps 1 and 3 of ``addon/gates/__init__.py``, with their fallbacks, because neither may fail a
request: an unreadable target is routed as another host (``addon/route.py``), unreadable identity
headers identify by the source address (``addon/identity.py``). Then the agent's session and
sighting (``addon/sightings.py``), and the :class:`~addon.call.Call` every gate reads, with its
serializable breadcrumbs in ``flow.metadata``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from addon import ids, metrics
from addon.call import Call, storable
from addon.identity import Identifier, Identity, Sessions, vendor_session
from addon.route import OTHER, Route, Router, host_port
from addon.sightings import Sightings

log = logging.getLogger("govrix.proxy")

Get = Callable[[str], str | None]


def _no_headers(_: str) -> None:
    return None


class Intake:
    """The first steps, over the identifier, router and sessions ``Govrix.start`` made."""

    def __init__(
        self, identifier: Identifier, router: Router, sessions: Sessions, sightings: Sightings
    ) -> None:
        self.identifier = identifier
        self.router = router
        self.sessions = sessions
        self.sightings = sightings

    def open(self, flow: http.HTTPFlow, get: Get, creds: tuple[str, str] | None) -> Call:
        """The call of a request: identified (Gemini's API key may travel in the query: that
        needs the provider first) and routed."""
        req = flow.request
        host, port, path, found = self._target(req, get, flow.client_conn.sni)
        identity = self._identify(flow, get, creds, found)
        route = self._route(req, host, port, path, found)
        return self._call(flow, identity, route, vendor_session(get))

    def identify_tunnel(self, flow: http.HTTPFlow, user: str) -> Identity:
        """Who a CONNECT's proxy credentials name (every request in the tunnel is them)."""
        return self.identifier.identify(_no_headers, user, peer(flow))

    def open_tunnel(self, flow: http.HTTPFlow, identity: Identity) -> Call:
        """The call of a CONNECT that is refused: its authority is the endpoint."""
        req = flow.request
        host = storable(req.host.lower())
        route = Route(OTHER, None, f"{host}:{req.port}", host, req.port, "")
        return self._call(flow, identity, route, vendor_session(_no_headers))

    def _target(
        self, req: http.Request, get: Get, sni: str | None
    ) -> tuple[str, int, str, tuple[Any, str] | None]:
        try:
            host, port, path = self.router.target(req, get, sni)
            host, path = storable(host), storable(path)
            found = self.router.detect(host_port(host, port), path)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "route").inc()
            log.exception("request target unreadable: routed as another host")
            return storable(str(req.host)), int(req.port), "", None
        return host, port, path, found

    def _identify(
        self,
        flow: http.HTTPFlow,
        get: Get,
        creds: tuple[str, str] | None,
        found: tuple[Any, str] | None,
    ) -> Identity:
        """Who is calling; falls back to the source IP rather than fail."""
        addr = peer(flow)
        try:
            query_key = (
                flow.request.query.get("key")
                if found is not None and found[0].name in ("gemini", "vertex")
                else None
            )
            return self.identifier.identify(get, creds[0] if creds else None, addr, query_key)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "identify").inc()
            log.exception("identity headers unreadable: identified by source address")
            return self.identifier.identify(_no_headers, None, addr)

    def _route(
        self, req: http.Request, host: str, port: int, path: str, found: tuple[Any, str] | None
    ) -> Route:
        try:
            return self.router.route(req, host, port, path, found)
        except Exception:
            metrics.child(metrics.HOOK_ERRORS, "route").inc()
            log.exception("routing failed: routed as another host")
            return Route(OTHER, None, path, host, port, path)

    def _call(
        self, flow: http.HTTPFlow, identity: Identity, route: Route, explicit_session: str | None
    ) -> Call:
        req = flow.request
        started = req.timestamp_start
        session_id, _ = self.sessions.resolve(identity.agent_id, time.monotonic(), explicit_session)
        self.sightings.sight(identity, started)
        call = Call(
            request_id=ids.event_id(),
            identity=identity,
            session_id=session_id,
            started=started,
            method=storable(req.method),
            route=route,
            request_bytes=len(req.raw_content or b""),
        )
        # Serializable breadcrumbs: a capture (``-w``) of this proxy can be replayed as itself.
        flow.metadata["govrix"] = {
            "agent_id": identity.agent_id,
            "agent_name": identity.name,
            "identity_kind": identity.kind,
            "session_id": session_id,
            "host": route.host,
            "request_event_id": call.request_id,
        }
        return call


def peer(flow: http.HTTPFlow) -> str | None:
    """The client's IP address, when the connection has one."""
    addr = flow.client_conn.peername
    return str(addr[0]) if addr else None
