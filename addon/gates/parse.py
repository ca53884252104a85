"""Parse the request body once, for the gates that read it, and the fail mode when it cannot be.

Parsing never raises (``addon.providers.parse_request``): an unreadable body (a broken
content-encoding, bytes that are not UTF-8, JSON that is not the provider's) leaves
``parse_error`` on the call. A gate that needs the parse then asks :func:`unreadable`, which
applies ``GOVRIX_UNPARSEABLE``: ``refuse`` (default; 400 ``unparseable_request``, which the
provider would answer to such a body anyway) or ``forward`` (the gate decides on what it knows).
"""

from __future__ import annotations

from addon import refusals
from addon.call import Call
from addon.providers import parse_request
from addon.refusals import Refusal


def parse(call: Call, path: str) -> None:
    """Fill ``call.info`` (once)."""
    if call.info is None and call.route.provider is not None:
        call.info = parse_request(call.route.provider, call.route.endpoint, path, call.body)


def unreadable(call: Call, gate: str, mode: str) -> Refusal | None:
    """The refusal for a gate that needs a body it cannot read, or None to go on."""
    why = call.parse_error
    if why is None or mode == "forward":
        return None
    return refusals.unparseable(gate, why)
