"""Benchmark: bare mitmdump vs ``mitmdump -s addon/main.py`` vs the lean master (not a test).

    scripts/govrix bench lean [--seconds 3] [--rounds 3] [--transport http,https]

Three proxies with identical options (``scripts/bench_proxy/procs.py``: ``-q``,
``connection_strategy=lazy``, ``ssl_insecure``), the addon ones each recording into their own
scratch database; one fake upstream in its own process; plain HTTP and HTTPS (CONNECT, the
proxy's own certificate towards the client, TLS to the upstream), keep-alive, concurrency 1 and
32. Rounds alternate the order (forward, then reversed) and the medians over rounds are printed,
with the proxy process's CPU per request from /proc. At the end the recorded events are counted,
so a proxy that recorded nothing cannot pass for a fast one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import psycopg

from scripts import bench_upstream, database
from scripts.bench_proxy.client import load
from scripts.bench_proxy.procs import Proxy, Upstream, free_port, running
from scripts.bench_writer import scratch_db


def _recorded(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE direction = 'request'").fetchone()
    return int(row[0]) if row else 0


async def run(seconds: float, rounds: int, transports: list[str]) -> None:
    base = database.ready().url
    work = Path(tempfile.mkdtemp(prefix="govrix-bench-lean-"))
    cert = bench_upstream.make_cert(work / "upstream")
    upstream = Upstream(free_port(), free_port())
    up = bench_upstream.start(upstream.http_port, upstream.https_port, cert)
    proxies = [
        Proxy("bare mitmdump", work / "bare", addon=False),
        Proxy("mitmdump -s", work / "script", addon=True, dsn=scratch_db(base, "govrix_bl_s")),
        Proxy("lean", work / "lean", addon=True, dsn=scratch_db(base, "govrix_bl_l"), lean=True),
    ]
    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
    try:
        with running(*proxies):
            for r in range(rounds):
                for transport in transports:
                    tls = transport == "https"
                    for conc in (1, 32):
                        for p in proxies if r % 2 == 0 else proxies[::-1]:
                            w = await load(
                                p.target(upstream, tls=tls), conc, 0.5, seconds, cpu=p.cpu
                            )
                            p.sent += w.sent
                            done = max(1, len(w.latencies))
                            cell = (len(w.latencies) / seconds, w.proxy_cpu / done * 1e6)
                            results.setdefault((transport, conc, p.name), []).append(cell)
                            print(
                                f"  round {r + 1} {transport:5} c={conc:<2} {p.name:14} "
                                f"{cell[0]:7.0f} req/s CPU/req {cell[1]:6.0f} µs  errors {w.errors}",
                                flush=True,
                            )
    finally:
        up.terminate()
        up.join(5)
    print("\n| transport | conc. | proxy | req/s (median) | vs bare | proxy CPU µs/req |")
    print("|---|---|---|---|---|---|")
    for transport in transports:
        for conc in (1, 32):
            bare = statistics.median(x[0] for x in results[(transport, conc, "bare mitmdump")])
            for p in proxies:
                cells = results[(transport, conc, p.name)]
                rps = statistics.median(x[0] for x in cells)
                cpu = statistics.median(x[1] for x in cells)
                print(
                    f"| {transport} | {conc} | {p.name} | {rps:.0f} | {rps / bare:.2f} | {cpu:.0f} |"
                )
    for p in proxies[1:]:
        print(f"{p.name}: sent {p.sent}, recorded {_recorded(p.dsn or '')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transport", default="http,https", help="comma-separated: http, https")
    args = ap.parse_args()
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    if not transports or set(transports) - {"http", "https"}:
        ap.error("--transport: http, https or both")
    asyncio.run(run(args.seconds, args.rounds, transports))


if __name__ == "__main__":
    main()
