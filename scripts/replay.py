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
from scripts import migrate, pgembed


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
                    recorded += addon.ingest(flow)
    finally:
        addon.done()
    return seen, recorded


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="govrix replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv[1:])
    env = dict(os.environ)
    if not env.get("GOVRIX_DATABASE_URL"):
        c = pgembed.start()
        pgembed.ensure_database(c)
        env["GOVRIX_DATABASE_URL"] = c.url()
    migrate.apply(env["GOVRIX_DATABASE_URL"])
    settings = config.load(env)
    try:
        seen, recorded = replay(args.files, settings)
    except (OSError, FlowReadException) as e:
        print(f"govrix replay: {e}", file=sys.stderr)
        return 1
    print(f"replayed {seen} HTTP flows; {recorded} LLM/MCP calls recorded ({2 * recorded} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
