"""The markdown section of BENCHMARKS.md ("## Proxy"): the command, the machine, the three
tables and the event check; and writing it in place of the previous one."""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
from pathlib import Path

import mitmproxy.version

from scripts import bench_upstream

from .procs import ROOT, Proxy
from .stats import Cell

COMMAND = "scripts/govrix bench proxy"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "mitmproxy": mitmproxy.version.VERSION,
        "os": platform.platform(),
    }


def _ms(v: float) -> str:
    return f"{v:.2f}"


def report(
    args: argparse.Namespace,
    facts: dict[str, str],
    pairs: dict[tuple[str, int, str], Cell],
    streams: dict[str, tuple[list[float], list[float]]],
    gov: dict[tuple[str, int, str], Cell],
    recorded: list[tuple[Proxy, dict[str, int]]],
) -> str:
    """The markdown section: command, machine, the three tables and the event check."""
    out: list[str] = []
    opts = f"--seconds {args.seconds:g} --warmup {args.warmup:g} --rounds {args.rounds} --ttfb-requests {args.ttfb_requests}"
    out += [
        f"## Proxy (`{COMMAND}`)",
        "",
        f"Reproduce: `{COMMAND} {opts}` (or `.venv/bin/python -m scripts.bench_proxy {opts}`).",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), Python {facts['python']}, "
        f"mitmproxy {facts['mitmproxy']}, {facts['os']}. Client (raw asyncio HTTP/1.1), fake "
        "upstream (own process) and PostgreSQL share these CPUs with the proxy.",
        "",
        "Both proxies: `mitmdump -q --set connection_strategy=lazy --set ssl_insecure=true`; the "
        "addon run adds `-s addon/main.py` (PII scan on, no policy, no budget). Keep-alive, ~2 KB "
        f"OpenAI chat request, ~600 B JSON answer; {args.rounds} round(s) of {args.seconds:g} s per "
        f"cell after {args.warmup:g} s warm-up, pooled. Latency is per request at the client.",
        "",
        "### 1. Throughput and latency, bare mitmdump vs the addon",
        "",
        "| scheme | conc. | bare req/s | addon req/s | addon/bare | bare p50 ms | addon p50 ms "
        "| added p50 ms | bare p99 ms | addon p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scheme in ("http", "https"):
        for conc in args.concurrency:
            b, a = pairs[(scheme, conc, "bare")], pairs[(scheme, conc, "addon")]
            out.append(
                f"| {scheme} | {conc} | {b.rps:,.0f} | {a.rps:,.0f} | {a.rps / b.rps:.1%} "
                f"| {_ms(b.p50)} | {_ms(a.p50)} | {a.p50 - b.p50:+.2f} | {_ms(b.p99)} | {_ms(a.p99)} |"
            )
    out += [
        "",
        "Targets: addon/bare >= 90%, added p50 <= 0.3 ms.",
        "",
        "CPU per request in the same windows (from `/proc`, utime + stime): the mitmdump process "
        "(all its threads), and for the addon also its recorder child process, which parses, "
        "costs, scans, chains and writes on another core while mitmdump's event loop serves.",
        "",
        "| scheme | conc. | bare mitmdump µs | addon mitmdump µs | added in mitmdump | "
        "recorder process µs |",
        "|---|---|---|---|---|---|",
    ]
    for scheme in ("http", "https"):
        for conc in args.concurrency:
            b, a = pairs[(scheme, conc, "bare")], pairs[(scheme, conc, "addon")]
            out.append(
                f"| {scheme} | {conc} | {b.proxy_cpu_us:,.0f} | {a.proxy_cpu_us:,.0f} "
                f"| {a.proxy_cpu_us / b.proxy_cpu_us - 1:+.1%} | {a.recorder_cpu_us:,.0f} |"
            )
    out.append("")

    out += [
        f"### 2. Time to first byte of an SSE stream (HTTP, median of {args.ttfb_requests})",
        "",
        f"The upstream sends the first chunk at once, then {bench_upstream.STREAM_MORE} more "
        f"{bench_upstream.STREAM_GAP_S * 1e3:.0f} ms apart.",
        "",
        "| path | TTFB p50 ms | TTFB max ms | whole stream p50 ms |",
        "|---|---|---|---|",
    ]
    for name, (firsts, totals) in streams.items():
        out.append(
            f"| {name} | {_ms(statistics.median(firsts) * 1e3)} | {_ms(max(firsts) * 1e3)} "
            f"| {_ms(statistics.median(totals) * 1e3)} |"
        )
    out += [
        "",
        "Bare mitmdump buffers a response body unless told to stream (`stream_large_bodies`), so "
        "its TTFB is the whole stream; the addon switches streaming on in `responseheaders`. The "
        "`stream_large_bodies=1` row (a third proxy, used only here) is mitmproxy's own streaming "
        "path, the floor for the addon's TTFB.",
        "",
        "### 3. Governance on vs off (HTTP, the addon both times)",
        "",
        "On: PII scan + 20-rule policy file + one global daily USD budget that never triggers. "
        "Off: `GOVRIX_PII_SCAN=0`, no policy, no budget.",
        "",
        "| conc. | off req/s | on req/s | on/off | off p50 ms | on p50 ms | added p50 ms "
        "| off p99 ms | on p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for conc in args.concurrency:
        off, on = gov[("http", conc, "gov-off")], gov[("http", conc, "gov-on")]
        out.append(
            f"| {conc} | {off.rps:,.0f} | {on.rps:,.0f} | {on.rps / off.rps:.1%} | {_ms(off.p50)} "
            f"| {_ms(on.p50)} | {on.p50 - off.p50:+.2f} | {_ms(off.p99)} | {_ms(on.p99)} |"
        )
    out += [
        "",
        "Target: governance costs <= 5% of throughput (on/off >= 95%).",
        "",
        "### Events recorded (each addon proxy has its own scratch database)",
        "",
        "| proxy | requests sent | request events | response events | usage reported | priced "
        "| with policy decisions | budget usage USD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p, got in recorded:
        out.append(
            f"| {p.name} | {p.sent:,} | {got['request']:,} | {got['response']:,} "
            f"| {got['reported_usage']:,} | {got['priced']:,} | {got['with_policy_decisions']:,} "
            f"| {got['budget_usd_micro'] / 1e6:.4f} |"
        )
    errors = sum(c.errors for c in (*pairs.values(), *gov.values()))
    out += ["", f"Non-200 answers during the load cells: {errors}.", ""]
    return "\n".join(out)


def write_section(
    section: str, path: Path = ROOT / "BENCHMARKS.md", heading: str = "## Proxy ("
) -> None:
    """Replace (or append) the section whose heading starts with ``heading`` (our "## Proxy"
    by default); every other section is kept as it is now."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    parts = re.split(r"(?m)^(?=## )", text)
    kept = [p for p in parts if not p.startswith(heading)]
    new = section.rstrip("\n") + "\n"
    if len(kept) < len(parts):  # replace in place
        i = next(i for i, p in enumerate(parts) if p.startswith(heading))
        parts[i] = new + ("\n" if i < len(parts) - 1 else "")
        out = "".join(parts)
    else:
        out = text.rstrip("\n") + "\n\n" + new
    path.write_text(out)


PEER_HEADING = "## Peer: LiteLLM"
#: Issue 14: Govrix serves at least this many times LiteLLM's requests per CPU core.
WORKERS_TARGET = 1.6
PEER_TARGET = 8.0


def per_core(c: Cell) -> float:
    """Requests per second per CPU core the proxy used (its process tree): 1 / CPU per request."""
    cpu_us = c.proxy_cpu_us + (0.0 if math.isnan(c.recorder_cpu_us) else c.recorder_cpu_us)
    return 1e6 / cpu_us if cpu_us > 0 else math.nan


def workers_verdict(args: argparse.Namespace, cells: dict[tuple[str, int, str], Cell]) -> list[str]:
    """Govrix with N workers against one at the highest concurrency (saturation), with where the
    CPU went; the target (>= 1.6x for 2) only counts where the machine has spare cores."""
    conc = max(args.concurrency)
    one = cells.get(("http", conc, "Govrix"))
    out: list[str] = []
    for n in args.govrix_workers:
        many = cells.get(("http", conc, f"Govrix x{n}"))
        if n <= 1 or one is None or many is None:
            continue
        cores = os.cpu_count() or 1
        out.append(
            f"Workers (issue 14: 2 workers >= {WORKERS_TARGET:g}x one worker's saturation req/s "
            f"where the machine has spare cores): at c={conc}, {n} workers {many.rps:,.0f} req/s "
            f"against one worker's {one.rps:,.0f} ({many.rps / one.rps:.2f}x); the {n} proxy "
            f"processes used {many.rps * many.proxy_cpu_us / 1e6:.2f} cores and their recorders "
            f"{many.rps * many.recorder_cpu_us / 1e6:.2f} (one worker: "
            f"{one.rps * one.proxy_cpu_us / 1e6:.2f} and {one.rps * one.recorder_cpu_us / 1e6:.2f})"
            f", on a machine of {cores} cores that the client, the fake upstream and PostgreSQL "
            "share"
            + (
                ": no core is spare, so the target cannot be measured here."
                if cores < 2 * n + 2
                else "."
            )
        )
        out.append("")
    return out


def peer_report(
    args: argparse.Namespace,
    facts: dict[str, str],
    cells: dict[tuple[str, int, str], Cell],
    names: list[str],
    recorded: list[tuple[str, int, dict[str, int]]],
) -> str:
    """The "## Peer: LiteLLM" section: req/s, latency and req/s per core, HTTP; and Govrix with
    several workers against one. ``recorded``: (name, requests sent, events recorded) of each
    Govrix."""
    opts = f"--seconds {args.seconds:g} --warmup {args.warmup:g} --rounds {args.rounds}"
    workers = ",".join(str(n) for n in args.peer_workers)
    govrix_workers = ",".join(str(n) for n in args.govrix_workers)
    command = (
        f"{COMMAND} --peer litellm --peer-only {opts} --peer-workers {workers} "
        f"--govrix-workers {govrix_workers}"
    )
    out = [
        f"{PEER_HEADING} (`{COMMAND} --peer litellm`)",
        "",
        f"Reproduce: `{command}` (without `--peer-only` the Proxy section above is measured and "
        f"rewritten too). Run {facts['utc']}; load average (1, 5, 15 min) "
        f"{facts['load_before']} before, {facts['load_after']} after.",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), Python {facts['python']}, "
        f"mitmproxy {facts['mitmproxy']}. Client, fake upstream and PostgreSQL share the CPUs.",
        "",
        "How the client reaches each: bare mitmdump (`-q --set connection_strategy=lazy --set "
        "ssl_insecure=true`) and Govrix (the proxy command line `scripts/govrix up` runs, "
        "`python -m addon.lean -q --mode regular ...`, recording into a scratch database; "
        "Govrix xN: N of them on one port, as `up` runs `GOVRIX_PROXY_WORKERS=N`, SO_REUSEPORT, "
        "one database) are "
        "forward proxies: absolute-form `POST http://upstream/v1/chat/completions`. LiteLLM "
        f"{facts.get('peer_version', '')} (`litellm --config <generated> --num_workers N`, "
        "scripts/bench_proxy/peer.py: one model on the fake upstream's OpenAI-compatible "
        "endpoint, no database, its master key set to the key the client sends (it refuses to "
        "start without one), telemetry off, its own venv) is a gateway: the client calls it as an OpenAI base URL, "
        "`POST /v1/chat/completions` to its port, and LiteLLM makes its own request upstream. "
        f"HTTP, keep-alive, the ~2 KB chat request, ~600 B JSON answer; {args.rounds} round(s) "
        f"of {args.seconds:g} s per cell after {args.warmup:g} s warm-up, order reversed every "
        "other round, pooled. CPU is utime + stime of each one's process tree (Govrix: proxy + "
        "recorder; LiteLLM: master + workers); cores used = CPU seconds / wall seconds; req/s "
        "per core = req/s / cores used.",
        "",
    ]
    if facts.get("peer_note"):
        out += [f"LiteLLM was not measured: {facts['peer_note']}", ""]
    out += [
        "| conc. | proxy | req/s | p50 ms | p99 ms | CPU µs/req | of which recorder "
        "| cores used | req/s per core | per core vs LiteLLM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts: list[str] = []
    for conc in args.concurrency:
        peer = cells.get(("http", conc, "LiteLLM"))
        peer_pc = per_core(peer) if peer else math.nan
        for name in names:
            c = cells[("http", conc, name)]
            pc = per_core(c)
            ratio = pc / peer_pc
            recorder = "n/a" if math.isnan(c.recorder_cpu_us) else f"{c.recorder_cpu_us:,.0f}"
            out.append(
                f"| {conc} | {name} | {c.rps:,.0f} | {_ms(c.p50)} | {_ms(c.p99)} "
                f"| {1e6 / pc:,.0f} | {recorder} | {c.rps / pc:.2f} | {pc:,.0f} "
                f"| {'n/a' if math.isnan(ratio) else f'{ratio:.2f}x'} |"
            )
            if name == "Govrix" and not math.isnan(ratio):
                verdicts.append(
                    f"c={conc}: {ratio:.2f}x, {'met' if ratio >= PEER_TARGET else 'missed'}"
                )
    errors = sum(c.errors for c in cells.values())
    out += [
        "",
        f"Target (issue 14): Govrix >= {PEER_TARGET:g}x LiteLLM's (1 worker) req/s per core: "
        + ("; ".join(verdicts) if verdicts else "not measured")
        + ".",
        "",
        *workers_verdict(args, cells),
        "; ".join(
            f"{name} recorded {got['request']:,} request and {got['response']:,} response events "
            f"for {sent:,} requests sent"
            for name, sent, got in recorded
        )
        + f". Non-200 answers: {errors}.",
        "",
    ]
    return "\n".join(out)
