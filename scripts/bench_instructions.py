"""Benchmark: CPU instructions per request in mitmdump, bare vs the addon (not a test).

    scripts/govrix bench instructions [--requests 200] [--no-write]

Wall-clock benchmarks on a small shared VM swing by ±20% from one window to the next (see the
CPU/req columns of ``bench proxy``); instruction counts do not. This runs each mitmdump under
valgrind's callgrind with instrumentation off, switches it on (``callgrind_control -i on``)
after a warm-up, sends ``--requests`` keep-alive requests one at a time (the same ~2 KB chat
request as ``bench proxy``, plain HTTP, to the same fake upstream), dumps the counters and reports
user-space instructions per request of the whole mitmdump process (all its threads):

- bare ``mitmdump``;
- ``mitmdump -s addon/main.py`` with the recorder process (the default; the recorder's own
  instructions are on another core and reported by ``bench proxy`` as CPU per request);
- the addon with ``GOVRIX_RECORDER=inline`` (everything in the mitmdump process);
- the addon with governance on, as ``bench proxy`` runs it: PII scan, its 20-rule policy and a
  global USD budget that every call reserves against and settles.

DESIGN.md's budget: the addon's own CPU per request stays within 10% of mitmproxy's. Needs
``valgrind`` (``apt-get install valgrind``). Results go into BENCHMARKS.md's "## Proxy
instructions" section.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts import bench_proxy as bp
from scripts import bench_upstream, pgembed
from scripts.bench_writer import scratch_db

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "scripts/govrix bench instructions"


class Valgrinded(bp.Proxy):
    """A bench proxy run under callgrind, instrumentation off until asked."""

    def command(self) -> list[str]:
        return [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={self.home / 'callgrind.out'}",
            *super().command(),
        ]  # fmt: skip


def _callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def _total_instructions(home: Path) -> int:
    dumps = sorted(home.glob("callgrind.out*"), key=lambda f: f.stat().st_mtime)
    for line in dumps[-1].read_text(errors="replace").splitlines() if dumps else []:
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no callgrind totals under {home}")


async def measure(p: Valgrinded, upstream: bp.Upstream, n: int) -> float:
    """Instructions per request over ``n`` sequential requests on one connection."""
    assert p.proc is not None
    target = p.target(upstream, tls=False)
    await bp.load(target, 1, 0.0, 3.0)  # warm up (imports, first flows) uninstrumented
    pid = str(p.proc.pid)
    await asyncio.to_thread(_callgrind_control, "-i", "on", pid)
    reader, writer = await bp.connect(target)
    payload = bp.request_bytes(target, bp.chat_body())
    try:
        for _ in range(n):
            writer.write(payload)
            if await bp.read_response(reader) != 200:
                raise RuntimeError(f"{p.name}: non-200 answer")
    finally:
        writer.close()
    await asyncio.to_thread(_callgrind_control, "-d", pid)
    await asyncio.sleep(1.0)
    return _total_instructions(p.home) / n


async def run(args: argparse.Namespace, base: str, work: Path) -> dict[str, float]:
    cert = bench_upstream.make_cert(work / "upstream")
    upstream = bp.Upstream(bp.free_port(), bp.free_port())
    up = bench_upstream.start(upstream.http_port, upstream.https_port, cert)
    governed = scratch_db(base, "govrix_bench_instr_gov")
    bp.add_budget(governed)  # as `bench proxy`'s governance-on proxy: every call reserves
    variants = [
        Valgrinded("bare", work / "bare", addon=False),
        Valgrinded(
            "addon", work / "addon", addon=True,
            dsn=scratch_db(base, "govrix_bench_instr_process"), env={"GOVRIX_RECORDER": "process"},
        ),
        Valgrinded(
            "addon, GOVRIX_RECORDER=inline", work / "inline", addon=True,
            dsn=scratch_db(base, "govrix_bench_instr_inline"), env={"GOVRIX_RECORDER": "inline"},
        ),
        Valgrinded(
            "addon, governance on", work / "gov", addon=True, dsn=governed,
            env={"GOVRIX_PII_SCAN": "1", "GOVRIX_POLICY_FILE": str(bp.write_policy(work))},
        ),
    ]  # fmt: skip
    out: dict[str, float] = {}
    try:
        for p in variants:
            try:
                p.start()
                p.wait_ready(timeout=600)  # valgrind: imports take a minute
                out[p.name] = await measure(p, upstream, args.requests)
                print(f"  {p.name:32} {out[p.name] / 1e6:8.3f} M instructions/request", flush=True)
            finally:
                p.stop()
    finally:
        up.terminate()
        up.join(5)
    return out


def report(args: argparse.Namespace, got: dict[str, float]) -> str:
    bare = got["bare"]
    lines = [
        f"## Proxy instructions (`{COMMAND}`)",
        "",
        f"Reproduce: `{COMMAND} --requests {args.requests}`. User-space instructions per request of "
        f"the whole mitmdump process under callgrind, {args.requests} sequential keep-alive HTTP "
        "requests after a warm-up (same request and fake upstream as `bench proxy`). "
        "Deterministic where the wall clock of a shared VM is not.",
        "",
        "| proxy | M instructions / request | vs bare |",
        "|---|---|---|",
    ]
    for name, v in got.items():
        lines.append(f"| {name} | {v / 1e6:.3f} | {v / bare - 1:+.1%} |")
    lines += [
        "",
        "Target (DESIGN.md §4): the addon adds <= 10% to mitmproxy's own CPU per request. The "
        "default addon's recorder process does its share on another core (its CPU per request "
        "is in `bench proxy`).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("bench instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    base = os.environ.get("GOVRIX_DATABASE_URL") or pgembed.start().url()
    with tempfile.TemporaryDirectory(prefix="govrix-bench-instr-") as tmp:
        got = asyncio.run(run(args, base, Path(tmp)))
    section = report(args, got)
    print()
    print(section)
    if not args.no_write:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        parts = re.split(r"(?m)^(?=## )", text)
        kept = [p for p in parts if not p.startswith("## Proxy instructions")]
        path.write_text("".join(kept).rstrip("\n") + "\n\n" + section)
        print('(written to BENCHMARKS.md, section "## Proxy instructions")')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
