"""``python -m api --host H --port P [--insecure-no-auth]``: serve the API with uvicorn.

Reads ``GOVRIX_DATABASE_URL`` and ``GOVRIX_API_KEY``; refuses to start without a key unless
``--insecure-no-auth`` is given (then every ``/api/v1`` route is open: loopback demos only).
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from api.app import create_app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    ap.add_argument("--host", default=os.environ.get("GOVRIX_API_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GOVRIX_API_PORT", "4001")))
    ap.add_argument("--insecure-no-auth", action="store_true", help="serve /api/v1 without a key")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    url = os.environ.get("GOVRIX_DATABASE_URL")
    if not url:
        print("govrix api: GOVRIX_DATABASE_URL is not set", file=sys.stderr)
        return 2
    key = os.environ.get("GOVRIX_API_KEY") or None
    if key is None and not args.insecure_no_auth:
        print(
            "govrix api: GOVRIX_API_KEY is not set; refusing to start "
            "(pass --insecure-no-auth to serve without authentication)",
            file=sys.stderr,
        )
        return 2
    app = create_app(url, key, insecure_no_auth=args.insecure_no_auth)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
