"""Benchmark: K concurrent SSE streams through bare mitmdump, Govrix as ``up`` runs it, and
LiteLLM (not a test).

    scripts/govrix bench streams [--streams 200] [--rate 40] [--steady-seconds 8] [--rounds 2]
                                 [--chunks 15] [--gap-ms 200] [--no-litellm] [--no-write]

One machine, loopback only, one fake upstream in its own process (scripts/bench_upstream.py,
its stream lengthened here to ``--chunks`` chunks ``--gap-ms`` apart, each carrying a numbered
token ``tokNNN`` so that its arrival can be told through any proxy that re-frames or rewrites the
events). The proxies:

- **bare mitmdump** with ``stream_large_bodies=1`` (mitmproxy's own streaming path; without it
  mitmdump buffers the whole stream, and its TTFB would be the stream's length), and
  bench_proxy's options (``-q``, ``connection_strategy=lazy``, ``ssl_insecure``);
- **Govrix**: the exact proxy command line ``scripts/govrix up`` runs (``scripts/plan.py``,
  ``python -m addon.lean -q --mode regular ...``: ``procs.stack_command``), recording into a
  scratch database; the events are counted at the end;
- **LiteLLM** (``scripts/bench_proxy/peer.py``: its own venv, installed on demand; skipped with
  the reason printed when it cannot be installed), called as an OpenAI base URL (it is a gateway,
  not an HTTP proxy), 1 worker.

Clients address the upstream itself through mitmdump and Govrix (absolute-form ``POST http://``),
one new connection per stream (concurrent HTTP/1.1 streams need one each). Two arrival patterns:
**burst** (``--streams`` streams opened evenly within ``--burst-window`` seconds) and **steady**
(``--rate`` new streams per second for ``--steady-seconds``; with the defaults about
rate x stream length = 120 are open at once). Per proxy and pattern: TTFB p50/p99 (request sent to
first body chunk, connect included), the added inter-chunk gap (p50/p99 of each gap between
consecutive tokens' arrivals minus the upstream's own gap), CPU per stream (the proxy's process
tree, the phase's wall window), RSS per open stream ((tree RSS at the most streams open - idle
RSS) / streams open then, in the burst: the first load after a fresh start, since CPython's heap
keeps its high-water mark), and idle RSS (after a warm-up of 10 plain requests and 2 streams).

Every proxy is started fresh each round, rounds alternate the order, and each number is the
median over rounds; ratios are against bare mitmdump in the same run. A no-proxy ("direct") row
is measured once, as the floor of the client and the upstream. Every process started here is
stopped on the way out, also on Ctrl-C or an error. Results are printed as markdown and written
into BENCHMARKS.md's "## Streams" section (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import multiprocessing
import multiprocessing.synchronize
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from scripts import bench_upstream, database
from scripts.bench_proxy.client import (
    Target,
    _status_and_length,
    chat_body,
    read_response,
    request_bytes,
)
from scripts.bench_proxy.fixtures import wait_events
from scripts.bench_proxy.peer import LiteLLM, PeerUnavailable, install
from scripts.bench_proxy.procs import Proxy, Upstream, free_port, running, stack_command
from scripts.bench_proxy.report import machine, write_section
from scripts.bench_proxy.stats import p50_p99
from scripts.bench_writer import scratch_db

COMMAND = "scripts/govrix bench streams"
HEADING = "## Streams ("
#: How a token is found in the bytes a client receives, whatever the proxy did to the events.
TOKEN = re.compile(rb"tok(\d{3})")
MAX_CHUNKS = 999  # three digits
#: Bounds on what one run may ask for (loopback only, but a shared 2-core machine).
MAX_STREAMS = 2000
MAX_RATE = 500.0
MAX_STEADY_S = 60.0


# -- pure parts (tests/test_bench_streams.py) ------------------------------------------------


def added_gaps(arrivals: Sequence[float], gap: float) -> list[float]:
    """Each gap between consecutive tokens' arrivals, minus the upstream's own ``gap`` (s)."""
    return [b - a - gap for a, b in itertools.pairwise(arrivals)]


def rss_per_stream(idle: int, loaded: int, open_streams: int) -> float:
    """Bytes per open stream: (RSS with ``open_streams`` open - idle RSS) / ``open_streams``."""
    if open_streams <= 0:
        return float("nan")
    return (loaded - idle) / open_streams


def schedule(pattern: str, streams: int, rate: float, seconds: float, window: float) -> list[float]:
    """When each stream opens, in seconds from the phase's start.

    burst: ``streams`` evenly within ``window``; steady: ``rate`` per second for ``seconds``.
    """
    if pattern == "burst":
        return [i * window / streams for i in range(streams)]
    if pattern == "steady":
        return [i / rate for i in range(max(1, round(rate * seconds)))]
    raise ValueError(f"unknown arrival pattern {pattern!r}")


def scan_tokens(buf: bytes, arrivals: list[float | None], now: float) -> None:
    """Stamp ``now`` on every token first seen in ``buf`` (a token seen before keeps its time)."""
    for m in TOKEN.finditer(buf):
        k = int(m.group(1))
        if k < len(arrivals) and arrivals[k] is None:
            arrivals[k] = now


def peak(samples: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    """(open streams, tree RSS, main RSS) of the sample with the most streams open (the later
    one on a tie: the heap has grown the most by then)."""
    best = (0, 0, 0)
    for s in samples:
        if s[0] >= best[0]:
            best = s
    return best


def median(values: Sequence[float]) -> float:
    """The median of the values that are numbers; NaN when none is."""
    ok = [v for v in values if not math.isnan(v)]
    return statistics.median(ok) if ok else float("nan")


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        v = kind(text)
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{text}: want {low:g} to {high:g}")
        return v

    return parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--streams", type=_bounded(int, 1, MAX_STREAMS), default=200,
                    help="K: streams opened in the burst (default 200)")  # fmt: skip
    ap.add_argument("--burst-window", type=_bounded(float, 0.01, 10), default=1.0,
                    help="seconds within which the burst's streams open (default 1)")  # fmt: skip
    ap.add_argument("--rate", type=_bounded(float, 0.1, MAX_RATE), default=40.0,
                    help="R: new streams per second in the steady phase (default 40)")  # fmt: skip
    ap.add_argument("--steady-seconds", type=_bounded(float, 0.1, MAX_STEADY_S), default=8.0,
                    help="how long the steady arrivals go on (default 8)")  # fmt: skip
    ap.add_argument("--chunks", type=_bounded(int, 2, MAX_CHUNKS), default=15,
                    help="token chunks per stream (default 15)")  # fmt: skip
    ap.add_argument("--gap-ms", type=_bounded(float, 1, 5000), default=200.0,
                    help="the upstream's gap between chunks (default 200 ms)")  # fmt: skip
    ap.add_argument("--rounds", type=_bounded(int, 1, 10), default=2,
                    help="rounds, alternating the order of the proxies (default 2)")  # fmt: skip
    ap.add_argument("--no-litellm", action="store_true", help="leave the LiteLLM peer out")
    ap.add_argument("--no-direct", action="store_true", help="leave the no-proxy row out")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    return ap


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    args.streams = int(args.streams)
    args.chunks = int(args.chunks)
    args.rounds = int(args.rounds)
    return args


# -- the upstream, its stream lengthened ------------------------------------------------------


def token_chunks(n: int) -> list[bytes]:
    """The stream the upstream sends: ``n`` numbered token chunks, then the usage chunk."""
    words = [bench_upstream._sse_chunk(f" tok{k:03d}") for k in range(n)]
    return [*words, bench_upstream._sse_chunk(None, usage=True)]


def _serve(
    http_port: int,
    https_port: int,
    cert: bench_upstream.Cert,
    ready: multiprocessing.synchronize.Event,
    chunks: int,
    gap: float,
) -> None:
    """The upstream's process: bench_upstream's server with this run's stream shape."""
    bench_upstream.STREAM_CHUNKS = token_chunks(chunks)
    bench_upstream.STREAM_GAP_S = gap
    bench_upstream.run(http_port, https_port, cert, ready)


def start_upstream(
    work: Path, chunks: int, gap: float
) -> tuple[Upstream, multiprocessing.process.BaseProcess]:
    cert = bench_upstream.make_cert(work / "upstream")
    up = Upstream(free_port(), free_port())
    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    proc = mp.Process(
        target=_serve,
        args=(up.http_port, up.https_port, cert, ready, chunks, gap),
        name="bench-upstream",
        daemon=True,
    )
    proc.start()
    if not ready.wait(15):
        proc.terminate()
        raise RuntimeError("the fake upstream did not start")
    return up, proc


# -- the client --------------------------------------------------------------------------------


@dataclass
class Stream:
    """One stream as the client saw it (times from ``time.perf_counter``)."""

    opened: float
    ttfb: float = float("nan")
    arrivals: list[float | None] = field(default_factory=list)
    error: str | None = None


@dataclass
class Live:
    open: int = 0


async def one_stream(
    target: Target, payload: bytes, chunks: int, live: Live, limit_s: float
) -> Stream:
    """Open a connection, send the request, read the chunked SSE answer to its end (at most
    ``limit_s`` seconds)."""
    s = Stream(time.perf_counter(), arrivals=[None] * chunks)
    counted = False
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit_s):
            port = target.proxy_port if target.proxy_port is not None else target.upstream_port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = _status_and_length(head)
            if status != 200 or length is not None:
                raise RuntimeError(f"status {status}, not a chunked stream")
            live.open += 1
            counted = True
            tail = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                data = (await reader.readexactly(size + 2))[:-2]
                now = time.perf_counter()
                if math.isnan(s.ttfb):
                    s.ttfb = now - s.opened
                buf = tail + data
                scan_tokens(buf, s.arrivals, now)
                tail = buf[-8:]  # a token cut between two chunks is found in the next pass
        if None in s.arrivals:
            s.error = f"{s.arrivals.count(None)} of {chunks} tokens missing"
    except (OSError, RuntimeError, ValueError, TimeoutError, asyncio.IncompleteReadError) as e:
        s.error = f"{type(e).__name__}: {e}"[:120]
    finally:
        if counted:
            live.open -= 1
        if writer is not None:
            writer.close()
    return s


class Measured(Protocol):
    name: str
    sent: int

    def cpu(self) -> tuple[float, float]: ...
    def rss(self) -> int: ...
    def main_rss(self) -> int: ...


@dataclass
class Phase:
    """One arrival pattern through one proxy, one round."""

    streams: list[Stream]
    samples: list[tuple[int, int, int]]  # (streams open, tree RSS, main RSS) per sample
    cpu_s: float
    wall_s: float

    def summary(self, gap: float, idle_rss: int, idle_main: int = 0) -> dict[str, float]:
        ok = [s for s in self.streams if s.error is None]
        ttfb = [s.ttfb for s in ok]
        gaps = [g for s in ok for g in added_gaps([a or 0.0 for a in s.arrivals], gap)]
        t50, t99 = p50_p99(ttfb)
        g50, g99 = p50_p99(gaps)
        most, rss, main = peak(self.samples)
        n = len(self.streams)
        return {
            "ttfb_p50_ms": t50 * 1e3,
            "ttfb_p99_ms": t99 * 1e3,
            "gap_p50_ms": g50 * 1e3,
            "gap_p99_ms": g99 * 1e3,
            "cpu_ms_per_stream": self.cpu_s / n * 1e3 if n and self.samples else math.nan,
            "cores": self.cpu_s / self.wall_s if self.samples else math.nan,
            "peak_open": float(most),
            "rss_kb_per_stream": rss_per_stream(idle_rss, rss, most) / 1024 if rss else math.nan,
            "main_kb_per_stream": rss_per_stream(idle_main, main, most) / 1024 if rss else math.nan,
            "peak_rss_mb": rss / 1e6 if rss else float("nan"),
            "errors": float(n - len(ok)),
            "streams": float(n),
        }


async def run_phase(
    target: Target,
    offsets: list[float],
    args: argparse.Namespace,
    proc: Measured | None,
) -> Phase:
    """Open streams at ``offsets``, sampling open streams and RSS, until every one has ended."""
    payload = request_bytes(target, chat_body(stream=True))
    gap = args.gap_ms / 1e3
    timeout = args.chunks * gap + 30.0
    live = Live()
    samples: list[tuple[int, int, int]] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            if proc is not None:
                samples.append((live.open, proc.rss(), proc.main_rss()))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    cpu0 = sum(proc.cpu()) if proc else 0.0
    t0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[Stream]] = []
    for off in offsets:
        delay = start + off - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_stream(target, payload, args.chunks, live, timeout)))
    streams = list(await asyncio.gather(*tasks))
    wall = time.perf_counter() - t0
    cpu = (sum(proc.cpu()) if proc else 0.0) - cpu0
    done.set()
    await sampler
    if proc is not None:
        proc.sent += len(streams)
    return Phase(streams, samples, cpu, wall)


async def warm_up(target: Target, args: argparse.Namespace, proc: Measured) -> None:
    """10 plain requests on one connection, then 2 streams at once: every code path loaded."""
    port = target.proxy_port if target.proxy_port is not None else target.upstream_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = request_bytes(target, chat_body())
    try:
        for _ in range(10):
            writer.write(payload)
            if await read_response(reader) != 200:
                raise RuntimeError(f"{proc.name}: the warm-up request failed")
    finally:
        writer.close()
    proc.sent += 10
    live = Live()
    body = request_bytes(target, chat_body(stream=True))
    timeout = args.chunks * args.gap_ms / 1e3 + 30.0
    for s in await asyncio.gather(
        *(one_stream(target, body, args.chunks, live, timeout) for _ in range(2))
    ):
        if s.error:
            raise RuntimeError(f"{proc.name}: the warm-up stream failed: {s.error}")
    proc.sent += 2


async def settle(proc: Measured, limit_s: float = 30.0) -> None:
    """Wait until the process tree is quiet: under 20 ms of CPU and RSS within 1 MiB in 0.5 s.

    Govrix answers (``proxy.pid``, the port) before its recorder process has finished loading,
    and the recorder works through what the warm-up sent after the client has its answers: an
    idle RSS read before then is not idle.
    """
    deadline = time.monotonic() + limit_s
    before = (sum(proc.cpu()), proc.rss())
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = (sum(proc.cpu()), proc.rss())
        if now[0] - before[0] < 0.02 and abs(now[1] - before[1]) < 1 << 20:
            return
        before = now
    print(f"  {proc.name}: not quiet within {limit_s:g}s; measuring anyway", flush=True)


async def idle_rss(proc: Measured) -> tuple[int, int]:
    """Tree RSS and the main process's own, medians of 5 samples 0.1 s apart, once the tree is
    quiet after the warm-up."""
    await settle(proc)
    tree: list[int] = []
    main: list[int] = []
    for _ in range(5):
        tree.append(proc.rss())
        main.append(proc.main_rss())
        await asyncio.sleep(0.1)
    return int(statistics.median(tree)), int(statistics.median(main))


# -- the run -----------------------------------------------------------------------------------

PATTERNS = ("burst", "steady")
Result = dict[str, float]


async def measure(
    proc: Proxy | LiteLLM,
    target: Target,
    args: argparse.Namespace,
    r: int,
) -> dict[str, Result]:
    """One round through one freshly started proxy: warm-up, idle RSS, burst, steady."""
    gap = args.gap_ms / 1e3
    await settle(proc)
    await warm_up(target, args, proc)
    idle, idle_main = await idle_rss(proc)
    out: dict[str, Result] = {}
    for pattern in PATTERNS:
        if pattern != PATTERNS[0]:
            await settle(proc)  # the recorder is done with the previous phase's events
        offsets = schedule(pattern, args.streams, args.rate, args.steady_seconds, args.burst_window)
        phase = await run_phase(target, offsets, args, proc)
        res = phase.summary(gap, idle, idle_main)
        res["idle_rss_mb"] = idle / 1e6
        res["idle_main_rss_mb"] = idle_main / 1e6
        if pattern != "burst":
            # the burst set the heap's high-water mark
            res["rss_kb_per_stream"] = res["main_kb_per_stream"] = math.nan
        out[pattern] = res
        _print(r, proc.name, pattern, res)
        errors = {s.error for s in phase.streams if s.error}
        if errors:
            print(f"    errors: {sorted(errors)[:3]}", flush=True)
    return out


def _print(r: int, name: str, pattern: str, res: Result) -> None:
    print(
        f"  round {r + 1} {name:14} {pattern:6} TTFB p50 {res['ttfb_p50_ms']:7.2f} p99 "
        f"{res['ttfb_p99_ms']:8.2f} ms  gap+ p50 {res['gap_p50_ms']:6.2f} p99 "
        f"{res['gap_p99_ms']:7.2f} ms  CPU {res['cpu_ms_per_stream']:6.2f} ms/stream  "
        f"open<= {res['peak_open']:.0f}  RSS/stream {res['rss_kb_per_stream']:6.1f} KB "
        f"(main {res['main_kb_per_stream']:6.1f})  "
        f"errors {res['errors']:.0f}/{res['streams']:.0f}",
        flush=True,
    )


async def run(args: argparse.Namespace, work: Path) -> str:
    load_before = os.getloadavg()
    started = time.gmtime()
    gap = args.gap_ms / 1e3
    base = database.ready().url
    dsn = scratch_db(base, "govrix_bench_streams")
    upstream, up = start_upstream(work, args.chunks, gap)
    exe: Path | None = None
    peer_note = "left out (--no-litellm)"
    if not args.no_litellm:
        try:
            exe = install()
            peer_note = ""
        except PeerUnavailable as e:
            peer_note = f"not measured: {e}"
            print(f"LiteLLM {peer_note}", flush=True)

    def make(name: str, r: int) -> Proxy | LiteLLM:
        home = work / f"{name}-{r}"
        if name == "bare mitmdump":
            return Proxy(name, home, addon=False, extra_args=["--set", "stream_large_bodies=1"])
        if name == "Govrix":
            return Proxy(name, home, addon=True, dsn=dsn, stack=True)
        assert exe is not None
        return LiteLLM(name, home, exe, upstream.http_port)

    names = ["bare mitmdump", "Govrix"] + (["LiteLLM"] if exe else [])
    results: dict[str, dict[str, list[Result]]] = {}
    govrix_sent = 0
    try:
        if not args.no_direct:
            direct = Target(upstream.http_port)
            for pattern in PATTERNS:
                offsets = schedule(
                    pattern, args.streams, args.rate, args.steady_seconds, args.burst_window
                )
                res = (await run_phase(direct, offsets, args, None)).summary(gap, 0)
                results.setdefault("direct (no proxy)", {}).setdefault(pattern, []).append(res)
                _print(0, "direct", pattern, res)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                proc = make(name, r)
                with running(proc):
                    target = (
                        proc.target()
                        if isinstance(proc, LiteLLM)
                        else Target(upstream.http_port, proc.port)
                    )
                    got = await measure(proc, target, args, r)
                if name == "Govrix":
                    govrix_sent += proc.sent
                for pattern, res in got.items():
                    results.setdefault(name, {}).setdefault(pattern, []).append(res)
    finally:
        up.terminate()
        up.join(5)
    recorded = wait_events(dsn, govrix_sent)
    if recorded["request"] < govrix_sent or recorded["response"] < govrix_sent:
        print(
            f"WARNING: Govrix sent {govrix_sent} requests but recorded {recorded}", file=sys.stderr
        )
    facts = machine() | {
        "load_before": " ".join(f"{x:.2f}" for x in load_before),
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "utc": time.strftime("%Y-%m-%d %H:%M UTC", started),
    }
    return report(args, facts, results, peer_note, govrix_sent, recorded)


# -- the report --------------------------------------------------------------------------------


def pooled(results: dict[str, dict[str, list[Result]]]) -> dict[str, dict[str, Result]]:
    """Each metric's median over rounds, per proxy and pattern."""
    return {
        name: {
            pattern: {k: median([r[k] for r in rounds]) for k in rounds[0]}
            for pattern, rounds in by_pattern.items()
        }
        for name, by_pattern in results.items()
    }


def _f(v: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(v) else f"{v:,.{digits}f}"


def _x(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"


def report(
    args: argparse.Namespace,
    facts: dict[str, str],
    results: dict[str, dict[str, list[Result]]],
    peer_note: str,
    govrix_sent: int,
    recorded: dict[str, int],
) -> str:
    med = pooled(results)
    opts = (
        f"--streams {args.streams} --rate {args.rate:g} --steady-seconds {args.steady_seconds:g} "
        f"--rounds {args.rounds} --chunks {args.chunks} --gap-ms {args.gap_ms:g}"
    )
    stream_s = args.chunks * args.gap_ms / 1e3
    cmd = " ".join(stack_command(4000, Path("$GOVRIX_HOME/mitmproxy"))[1:])
    out = [
        f"## Streams (`{COMMAND}`)",
        "",
        f"Reproduce: `{COMMAND} {opts}` (or `.venv/bin/python -m scripts.bench_streams {opts}`). "
        f"Run {facts['utc']}; load average (1, 5, 15 min) {facts['load_before']} before, "
        f"{facts['load_after']} after.",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), Python {facts['python']}, "
        f"mitmproxy {facts['mitmproxy']}, {facts['os']}. The client (raw asyncio), the fake "
        "upstream (own process), PostgreSQL and the proxy share these CPUs; loopback only.",
        "",
        f"Each stream: a new connection, the ~2 KB chat request with `stream: true`, {args.chunks} "
        f"token chunks {args.gap_ms:g} ms apart from the upstream (~{stream_s:g} s), then usage "
        f"and `[DONE]`. Burst: {args.streams} streams opened evenly within "
        f"{args.burst_window:g} s. Steady: {args.rate:g} new streams/s for "
        f"{args.steady_seconds:g} s (~{args.rate * stream_s:.0f} open at once). {args.rounds} "
        "round(s), every proxy started fresh each round, order alternating; medians over rounds.",
        "",
        "Proxies: bare `mitmdump -q --set connection_strategy=lazy --set ssl_insecure=true --set "
        "stream_large_bodies=1` (without the last option mitmdump buffers the stream whole); "
        f"Govrix as `scripts/govrix up` runs it, `{cmd}` (listen port and confdir moved), one "
        "worker, recording into a scratch database (metrics port off); LiteLLM "
        + (
            "`litellm --config <generated> --num_workers 1` (scripts/bench_proxy/peer.py), called "
            "as an OpenAI base URL (a gateway, not an HTTP proxy)."
            if not peer_note
            else peer_note + "."
        )
        + " mitmdump and Govrix are forward proxies: the client sends absolute-form "
        "`POST http://upstream/...` to them.",
        "",
    ]
    bare = med.get("bare mitmdump", {})
    for pattern in PATTERNS:
        title = (
            f"### Burst: {args.streams} streams within {args.burst_window:g} s"
            if pattern == "burst"
            else f"### Steady: {args.rate:g} new streams/s for {args.steady_seconds:g} s"
        )
        out += [
            title,
            "",
            "| proxy | TTFB p50 ms | TTFB p99 ms | p99 vs bare | added gap p50 ms | added gap "
            "p99 ms | CPU ms/stream | CPU vs bare | most open | RSS KB/open stream "
            "| idle RSS MB: main process / with children | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        b = bare.get(pattern, {})
        for name, by_pattern in med.items():
            m = by_pattern[pattern]
            out.append(
                f"| {name} | {_f(m['ttfb_p50_ms'])} | {_f(m['ttfb_p99_ms'])} "
                f"| {_x(m['ttfb_p99_ms'], b.get('ttfb_p99_ms', math.nan))} "
                f"| {_f(m['gap_p50_ms'])} | {_f(m['gap_p99_ms'])} "
                f"| {_f(m['cpu_ms_per_stream'])} "
                f"| {_x(m['cpu_ms_per_stream'], b.get('cpu_ms_per_stream', math.nan))} "
                f"| {_f(m['peak_open'], 0)} | {_f(m['rss_kb_per_stream'], 1)} "
                f"| {_f(m.get('idle_main_rss_mb', math.nan), 1)} / "
                f"{_f(m.get('idle_rss_mb', math.nan), 1)} | {_f(m['errors'], 0)} |"
            )
        out.append("")
    out += [
        "TTFB: request written to the first body chunk read, connect included. Added gap: each "
        "gap between consecutive tokens' arrival at the client minus the upstream's "
        f"{args.gap_ms:g} ms (the direct row is the floor: the upstream's own timer and the "
        "client's loop). CPU: utime + stime of the proxy's process tree (Govrix: the proxy and "
        "its recorder process; LiteLLM: master and workers) over the phase's wall time, per "
        "stream. RSS: the tree's VmRSS (shared pages counted once per process); per open stream "
        "only in the burst, the first load after a fresh start (the heap keeps its high-water "
        "mark). Idle: after the warm-up.",
        "",
    ]
    gov = med.get("Govrix", {})
    if gov and bare:
        p99_ratio = gov["steady"]["ttfb_p99_ms"] / bare["steady"]["ttfb_p99_ms"]
        per_stream = gov["burst"]["rss_kb_per_stream"]
        idle = gov["burst"]["idle_rss_mb"]
        idle_main = gov["burst"]["idle_main_rss_mb"]
        out += [
            "Targets (issue 14), Govrix:",
            "",
            f"- steady arrivals, TTFB p99 <= 1.2x bare mitmdump's: {p99_ratio:.2f}x, "
            f"{'met' if p99_ratio <= 1.2 else 'missed'};",
            f"- <= 40 KB RSS per open stream: {per_stream:.1f} KB, "
            f"{'met' if per_stream <= 40 else 'missed'};",
            f"- idle proxy RSS <= 120 MB: {idle:.1f} MB for the proxy and its recorder, "
            f"{'met' if idle <= 120 else 'missed'} ({idle_main:.1f} MB the proxy process alone, "
            f"{'met' if idle_main <= 120 else 'missed'} on that reading).",
            "",
        ]
    out += [
        f"Govrix recorded {recorded['request']:,} request and {recorded['response']:,} response "
        f"events for {govrix_sent:,} requests sent (warm-ups included).",
        "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="govrix-bench-streams-") as work:
        section = asyncio.run(run(args, Path(work)))
    print()
    print(section)
    if not args.no_write:
        write_section(section, heading=HEADING)
        print('(written to BENCHMARKS.md, section "## Streams")')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
