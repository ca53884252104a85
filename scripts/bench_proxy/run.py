"""The run: the three measurements over the proxies (bare vs addon, TTFB, governance on vs off),
the event check, the optional peer comparison (``--peer litellm``: bare mitmdump, Govrix as ``up``
runs it and LiteLLM, HTTP), and ``main`` (options, the database, the reports)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import scripts.bench_proxy as package
from scripts import bench_upstream, pgembed
from scripts.bench_writer import scratch_db

from .client import Target, load, ttfb
from .fixtures import add_budget, wait_events, write_policy
from .peer import LiteLLM, PeerUnavailable, install, peer_spec
from .procs import Proxy, Upstream, Workers, free_port, running
from .report import PEER_HEADING, machine, peer_report, report, write_section
from .stats import Cell, Pooled, summarise


async def measure_pairs(
    pairs: list[tuple[str, int]],
    proxies: tuple[Proxy | Workers | LiteLLM, ...],
    upstream: Upstream,
    args: argparse.Namespace,
) -> dict[tuple[str, int, str], Cell]:
    """Each (scheme, concurrency) for every proxy, ``rounds`` times, the order reversed every
    other round."""
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
                    f"  round {r + 1} {scheme:5} c={conc:<2} {p.name:12} {c.rps:8.0f} req/s  "
                    f"p50 {c.p50:6.2f} ms  p99 {c.p99:6.2f} ms  CPU/req {c.proxy_cpu_us:6.0f} "
                    f"+ {c.recorder_cpu_us:4.0f} µs  errors {w.errors}",
                    flush=True,
                )
    return {k: v.cell() for k, v in pooled.items()}


async def run(args: argparse.Namespace, base: str, work: Path) -> list[tuple[str, str]]:
    """The sections to write, as (heading, markdown): the Proxy section unless ``--peer-only``,
    and the peer's with ``--peer``."""
    cert = bench_upstream.make_cert(work / "upstream")
    upstream = Upstream(free_port(), free_port())
    up = bench_upstream.start(upstream.http_port, upstream.https_port, cert)
    out: list[tuple[str, str]] = []
    try:
        if not args.peer_only:
            out.append(("## Proxy (", await run_proxy(args, base, work, upstream)))
        if args.peer:
            out.append((PEER_HEADING, await run_peer(args, base, work, upstream)))
    finally:
        up.terminate()
        up.join(5)
    return out


async def run_peer(args: argparse.Namespace, base: str, work: Path, upstream: Upstream) -> str:
    """Bare mitmdump, Govrix as ``up`` runs it, and LiteLLM with each ``--peer-workers`` count:
    HTTP, ``--concurrency``, interleaved rounds. Without LiteLLM (it cannot be installed) the
    other two are still measured and the reason is reported."""
    load_before = os.getloadavg()
    started = time.gmtime()
    note = ""
    peers: list[LiteLLM] = []
    try:
        exe = install()
        peers = [
            LiteLLM(
                "LiteLLM" if n == 1 else f"LiteLLM x{n}", work / f"litellm-{n}", exe,
                upstream.http_port, workers=n,
            )
            for n in args.peer_workers
        ]  # fmt: skip
    except PeerUnavailable as e:
        note = str(e)
        print(f"LiteLLM not measured: {note}", flush=True)
    name = "govrix_bench_proxy_peer"
    dsn = scratch_db(base, name)
    bare = Proxy("bare mitmdump", work / "peer-bare", addon=False)
    govrix = Proxy("Govrix", work / "peer-govrix", addon=True, dsn=dsn, stack=True)
    pools = [
        Workers(f"Govrix x{n}", work / f"peer-govrix-{n}", scratch_db(base, f"{name}_{n}"), n)
        for n in args.govrix_workers
        if n > 1
    ]
    proxies: tuple[Proxy | Workers | LiteLLM, ...] = (bare, govrix, *pools, *peers)
    print("peer: bare mitmdump, Govrix (as `up` runs it), LiteLLM", flush=True)
    with running(*proxies):
        cells = await measure_pairs(
            [("http", c) for c in args.concurrency], proxies, upstream, args
        )
        recorded = [(govrix.name, govrix.sent, wait_events(dsn, govrix.sent))] + [
            (g.name, g.sent, wait_events(g.dsn, g.sent)) for g in pools
        ]
    for name, sent, got in recorded:
        if got["request"] < sent or got["response"] < sent:
            print(f"WARNING: {name} sent {sent} requests but recorded {got}", file=sys.stderr)
    facts = machine() | {
        "load_before": " ".join(f"{x:.2f}" for x in load_before),
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "utc": time.strftime("%Y-%m-%d %H:%M UTC", started),
        "peer_note": note,
        "peer_version": peer_spec(),
    }
    names = [p.name for p in proxies]
    return peer_report(args, facts, cells, names, recorded)


async def run_proxy(args: argparse.Namespace, base: str, work: Path, upstream: Upstream) -> str:
    """The three measurements of the Proxy section, and its event check."""
    dsn = {name: scratch_db(base, f"govrix_bench_proxy_{name}") for name in ("addon", "off", "on")}
    add_budget(dsn["on"])
    policy = write_policy(work)

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
    ap.add_argument(
        "--peer", choices=["litellm"], default=None,
        help="also compare with a peer gateway (installed on demand into its own venv): "
        'bare mitmdump, Govrix as `up` runs it, the peer; HTTP; section "## Peer: LiteLLM"',
    )  # fmt: skip
    ap.add_argument(
        "--peer-workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
        help="the peer's --num_workers, one column each (default 1,2)",
    )  # fmt: skip
    ap.add_argument(
        "--govrix-workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
        help="with --peer: Govrix with GOVRIX_PROXY_WORKERS=N on one port, one column each for "
        "N > 1 (default 1,2: one worker and two)",
    )  # fmt: skip
    ap.add_argument(
        "--peer-only", action="store_true",
        help="with --peer: only the peer comparison (the Proxy section is left as it is)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.peer_only and not args.peer:
        ap.error("--peer-only needs --peer litellm")
    base = os.environ.get("GOVRIX_DATABASE_URL") or pgembed.start().url()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="govrix-bench-proxy-")))
        sections = asyncio.run(run(args, base, work))
    for heading, section in sections:
        print()
        print(section)
        if not args.no_write:
            write_section(section, heading=heading)
            print(f'(written to BENCHMARKS.md, section "{heading.rstrip(" (")}")')
    return 0
