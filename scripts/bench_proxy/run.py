"""The run: the three measurements over the proxies (bare vs addon, TTFB, governance on vs off),
the event check, and ``main`` (options, the database, the report)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import scripts.bench_proxy as package
from scripts import bench_upstream, pgembed
from scripts.bench_writer import scratch_db

from .client import Target, load, ttfb
from .fixtures import add_budget, wait_events, write_policy
from .procs import Proxy, Upstream, free_port, running
from .report import machine, report, write_section
from .stats import Cell, Pooled, summarise


async def measure_pairs(
    pairs: list[tuple[str, int]],
    proxies: tuple[Proxy, Proxy],
    upstream: Upstream,
    args: argparse.Namespace,
) -> dict[tuple[str, int, str], Cell]:
    """Each (scheme, concurrency) for both proxies, ``rounds`` times, alternating who goes first."""
    pooled: dict[tuple[str, int, str], Pooled] = {}
    for r in range(args.rounds):
        for scheme, conc in pairs:
            order = proxies if r % 2 == 0 else proxies[::-1]
            for p in order:
                w = await load(
                    p.target(upstream, tls=scheme == "https"),
                    conc,
                    args.warmup,
                    args.seconds,
                    cpu=p.cpu,
                )
                p.sent += w.sent
                pooled.setdefault((scheme, conc, p.name), Pooled()).add(w, args.seconds)
                c = summarise(
                    w.latencies, args.seconds, w.sent, w.errors, w.proxy_cpu, w.recorder_cpu
                )
                print(
                    f"  round {r + 1} {scheme:5} c={conc:<2} {p.name:10} {c.rps:8.0f} req/s  "
                    f"p50 {c.p50:6.2f} ms  p99 {c.p99:6.2f} ms  CPU/req {c.proxy_cpu_us:6.0f} "
                    f"+ {c.recorder_cpu_us:4.0f} µs  errors {w.errors}",
                    flush=True,
                )
    return {k: v.cell() for k, v in pooled.items()}


async def run(args: argparse.Namespace, base: str, work: Path) -> str:
    dsn = {name: scratch_db(base, f"govrix_bench_proxy_{name}") for name in ("addon", "off", "on")}
    add_budget(dsn["on"])
    policy = write_policy(work)
    cert = bench_upstream.make_cert(work / "upstream")
    upstream = Upstream(free_port(), free_port())
    up = bench_upstream.start(upstream.http_port, upstream.https_port, cert)

    bare = Proxy("bare", work / "bare", addon=False)
    # TTFB control only: mitmproxy's own streaming, to tell its share from the addon's.
    bare_streaming = Proxy(
        "bare-stream", work / "bare-stream", addon=False,
        extra_args=["--set", "stream_large_bodies=1"],
    )  # fmt: skip
    addon = Proxy("addon", work / "addon", addon=True, dsn=dsn["addon"])
    off = Proxy("gov-off", work / "off", addon=True, dsn=dsn["off"], env={"GOVRIX_PII_SCAN": "0"})
    on = Proxy(
        "gov-on", work / "on", addon=True, dsn=dsn["on"],
        env={"GOVRIX_PII_SCAN": "1", "GOVRIX_POLICY_FILE": str(policy)},
    )  # fmt: skip
    try:
        with running(bare, bare_streaming, addon, off, on):
            print("1. bare vs addon", flush=True)
            cells = [(s, c) for s in ("http", "https") for c in args.concurrency]
            pairs = await measure_pairs(cells, (bare, addon), upstream, args)

            print("2. time to first byte", flush=True)
            direct = Target(upstream.http_port)
            streams: dict[str, tuple[list[float], list[float]]] = {}
            for name, tgt in (
                ("direct", direct),
                ("bare mitmdump", bare.target(upstream, tls=False)),
                (
                    "bare mitmdump, stream_large_bodies=1",
                    bare_streaming.target(upstream, tls=False),
                ),
                ("addon", addon.target(upstream, tls=False)),
            ):
                await ttfb(tgt, 3)  # connect and warm up, not measured
                streams[name] = await ttfb(tgt, args.ttfb_requests)
                print(
                    f"  {name:38} TTFB p50 {statistics.median(streams[name][0]) * 1e3:.2f} ms",
                    flush=True,
                )
            addon.sent += args.ttfb_requests + 3
            bare.sent += args.ttfb_requests + 3

            print("3. governance on vs off", flush=True)
            gov = await measure_pairs(
                [("http", c) for c in args.concurrency], (off, on), upstream, args
            )

            print("checking the recorded events ...", flush=True)
            recorded = [(p, wait_events(p.dsn or "", p.sent)) for p in (addon, off, on)]
    finally:
        up.terminate()
        up.join(5)
    for p, got in recorded:
        if got["request"] < p.sent or got["response"] < p.sent:
            print(f"WARNING: {p.name} sent {p.sent} requests but recorded {got}", file=sys.stderr)
    return report(args, machine(), pairs, streams, gov, recorded)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=package.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seconds", type=float, default=4.0, help="measurement window per cell and round"
    )
    ap.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds before each window"
    )
    ap.add_argument(
        "--rounds", type=int, default=2, help="rounds over all cells, alternating order"
    )
    ap.add_argument("--ttfb-requests", type=int, default=50)
    ap.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32],
        help="comma-separated connection counts (default 1,32)",
    )  # fmt: skip
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    base = os.environ.get("GOVRIX_DATABASE_URL") or pgembed.start().url()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="govrix-bench-proxy-")))
        section = asyncio.run(run(args, base, work))
    print()
    print(section)
    if not args.no_write:
        write_section(section)
        print('(written to BENCHMARKS.md, section "## Proxy")')
    return 0
