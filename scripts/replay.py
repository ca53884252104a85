"""Feed a flow file captured with ``mitmdump -w FILE`` through the addon offline.

    scripts/govrix replay FILE [FILE ...]

Every LLM and MCP call in the capture is recorded (events, chains, costs, PII findings, inline
scores) in GOVRIX_DATABASE_URL or the embedded cluster, with the capture's own timestamps. Nothing
is forwarded and nothing is enforced: the kill switch, budgets and policy blocks do not apply to
traffic that already happened (policy tags and logs do).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mitmproxy import http, io
from mitmproxy.exceptions import FlowReadException

from addon import config
from addon.proxy import Govrix
from addon.route import OTHER
from scripts import database


def replay(paths: list[Path], settings: config.Settings) -> tuple[int, int]:
    """(flows read, calls recorded). Raises FlowReadException for a file that is not a capture."""
    addon = Govrix(settings, replay=True)
    addon.start()
    seen = recorded = 0
    try:
        for path in paths:
            with open(path, "rb") as f:
                for flow in io.FlowReader(f).stream():
                    if not isinstance(flow, http.HTTPFlow):
                        continue
                    seen += 1
                    recorded += ingest(addon, flow)
    finally:
        addon.done()
    return seen, recorded


def ingest(addon: Govrix, flow: http.HTTPFlow) -> bool:
    """Record one captured flow as if it had passed through: no enforcement, no forwarding, the
    capture's own timestamps. True when it was an LLM or MCP call."""
    meta = flow.metadata.get("govrix")
    if isinstance(meta, dict):  # captured by this proxy: the upstream may have been rewritten
        if isinstance(meta.get("host"), str):
            flow.request.host_header = meta["host"]
        if meta.get("identity_kind") in ("proxy_auth", "header") and isinstance(
            meta.get("agent_name"), str
        ):
            flow.request.headers["x-govrix-agent"] = meta["agent_name"]
        if isinstance(meta.get("session_id"), str):
            flow.request.headers["x-govrix-session"] = meta["session_id"]
    call = addon.enforce(flow)
    addon.forget(flow)
    if call is None:
        return False
    if not call.done:  # (refused by a policy: its request event is all there is)
        error = None if flow.response is not None else "no response captured"
        addon.finish(flow, call, error=flow.error.msg if flow.error else error)
    return call.route.kind != OTHER  # other hosts: metadata events, not counted as calls


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="govrix replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv[1:])
    try:
        url = database.ready().url
    except database.DatabaseError as e:
        print(f"govrix replay: {e}", file=sys.stderr)
        return 1
    settings = config.load(os.environ | {"GOVRIX_DATABASE_URL": url})
    try:
        seen, recorded = replay(args.files, settings)
    except (OSError, FlowReadException) as e:
        print(f"govrix replay: {e}", file=sys.stderr)
        return 1
    print(f"replayed {seen} HTTP flows; {recorded} LLM/MCP calls recorded ({2 * recorded} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
