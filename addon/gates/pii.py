"""PII on the request: the redaction a policy rule asked for, applied to the forwarded body.

Detected values in every string of the JSON body are replaced, inside JSON text held in strings
too (tool arguments stay parseable JSON); the event keeps types, counts and JSON paths, never a
value. (The scan itself runs in the policy gate when rules need it, else in
the recorder, off the event loop.)
"""

from __future__ import annotations

import msgspec
from mitmproxy import http

from addon import pii
from addon.call import Call
from addon.refusals import Refusal

_json = msgspec.json.Encoder()


class PiiGate:
    name = "pii"

    def __call__(self, call: Call, flow: http.HTTPFlow) -> Refusal | None:
        if not call.redact or not call.findings or call.body is None:
            return None
        try:
            doc = msgspec.json.decode(call.body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None  # not JSON: the policy gate already applied the unparseable mode
        new_doc, n = pii.redact_json(doc)
        if n:
            call.body = _json.encode(new_doc)
            flow.request.content = call.body
            call.policy_decisions[-1]["redacted"] = n
        return None
