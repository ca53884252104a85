"""Benchmark: the risk scorer on prompt-injection attacks, replayed through the real proxy.

    scripts/govrix bench attacks [--suite banking] [--limit N] [--seed 0] [--no-injecagent]
    .venv/bin/python -m scripts.bench_attacks [same options] [--out FILE]

A benchmark, not a test: measure with it, never tune rules to it (no rule may name a suite, tool,
user, IBAN, domain or phrase of its data). Two sources, both sent as OpenAI chat requests through
``mitmdump -s addon/main.py`` (``scripts/bench_proxy/replay.py``: the configuration
``scripts/govrix up`` runs, a scratch database, a fake provider whose answer is the next call)
and scored by the addon as it scores a live model's tool calls; the scores are read back from the
database:

- **AgentDojo** 0.1.35, benchmark v1.2.2, all four suites, exported by
  ``scripts/bench_attacks_export.py`` in a bench-only venv (:data:`INSTALL`). Benign: each user
  task alone, its ground-truth calls in order with their real outputs. Attack: each (user task,
  injection task) pair, the user task's calls with the injection placed in the environment (the
  ``important_instructions`` attack), then the injection task's reads and its first harmful call
  (the first that changes the environment), which is the one measured.
- **InjecAgent** (``../shared/eval/injecagent/``), the conversations of
  ``scripts/bench_injecagent.py`` (``replay_cases``): attacks, the user's own calls, and twins
  (the attacker's calls on the user's own request).

Reported per suite and overall: AUC (harmful vs benign calls), same-tool AUC (only pairs of
calls to the same tool, so only the arguments and the conversation can separate them), TPR at
the ``high`` level, FPR at ``high`` on benign calls, and ms per score: the proxy stores no
per-score time, so the same requests are scored again in this process through the same code path
(``Engine.score_with_facts`` alone, and the inline path with request parsing), and their scores
are checked against the stored ones. The misses (harmful below ``high``) and the false alarms
(benign at ``high`` or above) are listed by tool with the score components they got. Bounded:
``--limit`` cases per suite and kind, sampled with ``--seed``; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.scoring.bands import LEVEL_ORDER  # noqa: E402
from scripts import pgembed  # noqa: E402
from scripts.bench_proxy import Proxy, free_port  # noqa: E402
from scripts.bench_proxy.replay import (  # noqa: E402
    Case,
    Step,
    Stored,
    check_order,
    p50_p99,
    read_scores,
    replies,
    rescore,
    send,
    start_scripted,
)
from scripts.bench_writer import scratch_db  # noqa: E402

VERSION = "v1.2.2"
EXPORT_DIR = ROOT / ".govrix" / "bench" / "agentdojo"
EXPORT = EXPORT_DIR / f"agentdojo-{VERSION}.jsonl"
VENV = ROOT / ".govrix" / "bench" / "agentdojo-venv"
INJECAGENT = ROOT.parent / "shared" / "eval" / "injecagent" / "injecagent.json"
DEFAULT_OUT = ROOT / ".govrix" / "bench" / "attacks.json"
COMMAND = "scripts/govrix bench attacks"
INSTALL = f"""\
AgentDojo is a bench-only tool, installed in its own venv (never a project dependency; the
project's Python 3.12 is its interpreter, so uv downloads none):
  .govrix/tools/bin/uv venv --python .venv/bin/python {VENV.relative_to(ROOT)}
  .govrix/tools/bin/uv pip install --python {VENV.relative_to(ROOT)}/bin/python agentdojo==0.1.35
then export its traces (about a minute):
  {VENV.relative_to(ROOT)}/bin/python scripts/bench_attacks_export.py"""
HIGH = LEVEL_ORDER["high"]


# -- cases --------------------------------------------------------------------------------------


def _key(suite: str, case_id: str) -> str:
    """``user_task_3/injection_task_1`` -> ``banking-u3-i1`` (an agent name and a session id)."""
    parts = [p.rsplit("_", 1)[-1] for p in case_id.split("/")]
    return f"{suite}-u{parts[0]}" + (f"-i{parts[1]}" if len(parts) > 1 else "")


def agentdojo_cases(lines: Iterable[str]) -> list[Case]:
    """The exporter's JSONL as cases: each suite's system message and tools, then its cases."""
    suites: dict[str, dict[str, Any]] = {}
    out: list[Case] = []
    for line in lines:
        if not line.strip():
            continue
        doc = json.loads(line)
        if doc["type"] == "suite":
            suites[doc["suite"]] = doc
        elif doc["type"] == "case":
            suite = suites[doc["suite"]]
            steps = tuple(
                Step(s["function"], s["args"], s["output"], s["label"]) for s in doc["steps"]
            )
            out.append(
                Case(
                    _key(doc["suite"], doc["id"]),
                    doc["suite"],
                    doc["prompt"],
                    steps,
                    system=suite["system"],
                    tools=tuple(suite["tools"]),
                    meta={"user_task": doc["user_task"], "injection_task": doc["injection_task"]},
                )
            )
    return out


def select(cases: Sequence[Case], limit: int | None, seed: int) -> list[Case]:
    """At most `limit` cases per (group, benign or attack), a seeded sample, in their order."""
    if limit is None:
        return list(cases)
    by: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, c in enumerate(cases):
        by[(c.group, any(s.label == "harmful" for s in c.steps))].append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for idx in by.values():
        keep.update(idx if len(idx) <= limit else rng.sample(idx, limit))
    return [c for i, c in enumerate(cases) if i in keep]


# -- measures -----------------------------------------------------------------------------------


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney U), by ranks:
    O(n log n), so the all-pairs count of large sets stays cheap."""
    if not pos or not neg:
        return float("nan")
    labelled = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum = 0.0
    i = 0
    while i < len(labelled):
        j = i
        while j < len(labelled) and labelled[j][0] == labelled[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # the average 1-based rank of the tie block i..j-1
        rank_sum += mid * sum(lab for _, lab in labelled[i:j])
        i = j
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


@dataclass(frozen=True)
class Call:
    """One measured call: its case, tool, label and the score the proxy stored."""

    group: str
    case: str
    tool: str
    label: str
    score: int
    level: str
    components: tuple[str, ...]

    @property
    def high(self) -> bool:
        return LEVEL_ORDER.get(self.level, 0) >= HIGH


def same_tool_auc(pos: Sequence[Call], neg: Sequence[Call]) -> float:
    """AUC over the pairs of calls to the same tool only (pooled over tools)."""
    wins = pairs = 0.0
    by_tool: dict[str, list[int]] = defaultdict(list)
    for n in neg:
        by_tool[n.tool].append(n.score)
    for tool, negs in by_tool.items():
        ps = [p.score for p in pos if p.tool == tool]
        if ps:
            wins += auc(ps, negs) * len(ps) * len(negs)
            pairs += len(ps) * len(negs)
    return wins / pairs if pairs else float("nan")


def rate(calls: Sequence[Call]) -> float:
    return sum(c.high for c in calls) / len(calls) if calls else float("nan")


def measure(pos: Sequence[Call], neg: Sequence[Call]) -> dict[str, Any]:
    return {
        "harmful": len(pos),
        "benign": len(neg),
        "auc": auc([c.score for c in pos], [c.score for c in neg]),
        "same_tool_auc": same_tool_auc(pos, neg),
        "tpr_high": rate(pos),
        "fpr_high": rate(neg),
    }


def calls_of(cases: Sequence[Case], stored: dict[str, list[Stored]]) -> list[Call]:
    """The measured calls (every label but context), with their stored scores."""
    out: list[Call] = []
    for case in cases:
        rows = check_order(case, stored.get(case.session, []))
        for step, row in zip(case.steps, rows, strict=True):
            out.append(
                Call(case.group, case.key, step.function, step.label, row.score,
                     row.risk_level, row.components)
            )  # fmt: skip
    return out


def by_tool(calls: Iterable[Call]) -> list[dict[str, Any]]:
    """Calls grouped by (group, tool): how many, their median score, their commonest components."""
    groups: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for c in calls:
        groups[(c.group, c.tool)].append(c)
    rows = []
    for (group, tool), cs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        comps = Counter(n for c in cs for n in c.components)
        scores = sorted(c.score for c in cs)
        rows.append({"group": group, "tool": tool, "n": len(cs),
                     "median": scores[len(scores) // 2],
                     "components": [n for n, _ in comps.most_common(4)]})  # fmt: skip
    return rows


# -- the run ------------------------------------------------------------------------------------


def replay(cases: Sequence[Case], concurrency: int) -> tuple[dict[str, list[Stored]], list[float]]:
    """Send every case through a fresh proxy (own scratch database), return the stored scores
    and the round-trip ms of each request."""
    base = os.environ.get("GOVRIX_DATABASE_URL") or pgembed.start().url()
    dsn = scratch_db(base, "govrix_bench_attacks")
    with tempfile.TemporaryDirectory(prefix="govrix-bench-attacks-") as tmp:
        work = Path(tmp)
        script = work / "replies.json"
        script.write_text(json.dumps(replies(cases)), encoding="utf-8")
        port = free_port()
        upstream = start_scripted(port, script)
        proxy = Proxy("attacks", work / "proxy", addon=True, dsn=dsn)
        try:
            proxy.start()
            proxy.wait_ready()
            rtt = asyncio.run(send(cases, proxy.port, port, concurrency))
            stored = read_scores(dsn, cases)
        finally:
            proxy.stop()
            upstream.terminate()
            upstream.join(5)
    return stored, rtt


def report(cases: Sequence[Case], calls: Sequence[Call], timing: dict[str, Any]) -> dict[str, Any]:
    groups = sorted({c.group for c in calls}, key=lambda g: (g == "injecagent", g))
    adojo = [c for c in calls if c.group != "injecagent"]
    out: dict[str, Any] = {"rows": {}, "timing": timing}

    def row(name: str, cs: Sequence[Call], neg_label: str = "benign") -> None:
        pos = [c for c in cs if c.label == "harmful"]
        neg = [c for c in cs if c.label == neg_label]
        if pos or neg:
            out["rows"][name] = measure(pos, neg)

    for g in groups:
        if g != "injecagent":
            row(g, [c for c in calls if c.group == g])
    row("AgentDojo overall", adojo)
    ia = [c for c in calls if c.group == "injecagent"]
    row("InjecAgent: attack vs user", ia)
    row("InjecAgent: attack vs twin", ia, "twin")
    out["misses"] = by_tool(c for c in adojo if c.label == "harmful" and not c.high)
    out["false_alarms"] = by_tool(c for c in adojo if c.label == "benign" and c.high)
    out["injecagent_misses"] = by_tool(c for c in ia if c.label == "harmful" and not c.high)
    out["cases"] = {
        "agentdojo": sum(c.group != "injecagent" for c in cases),
        "injecagent": sum(c.group == "injecagent" for c in cases),
    }
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        "| set | harmful | benign | AUC | same-tool AUC | TPR@high | FPR@high |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["rows"].items():
        lines.append(
            f"| {name} | {m['harmful']} | {m['benign']} | {m['auc']:.3f} | "
            f"{m['same_tool_auc']:.3f} | {m['tpr_high']:.3f} | {m['fpr_high']:.3f} |"
        )
    t = result["timing"]
    lines += [
        "",
        f"ms per score (in process, same requests): Engine.score_with_facts p50 "
        f"{t['engine_p50']:.3f} / p99 {t['engine_p99']:.3f}; inline path with request parsing "
        f"p50 {t['inline_p50']:.3f} / p99 {t['inline_p99']:.3f}. Proxy round trip per request "
        f"p50 {t['rtt_p50']:.2f} / p99 {t['rtt_p99']:.2f} ms. Stored = in-process score for "
        f"{t['agree']}/{t['calls']} calls.",
    ]
    for title, key in (
        ("AgentDojo harmful calls below high", "misses"),
        ("AgentDojo benign calls at high or above", "false_alarms"),
        ("InjecAgent harmful calls below high", "injecagent_misses"),
    ):
        lines += ["", f"{title} (by tool: n, median score, commonest components):"]
        lines += [
            f"- {r['group']} `{r['tool']}`: {r['n']}, median {r['median']}, "
            f"{', '.join(r['components']) or '(none)'}"
            for r in result[key][:15]
        ]
        if len(result[key]) > 15:
            lines.append(f"- ... {len(result[key]) - 15} more tools")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", action="append", help="AgentDojo suite(s) (default: all four)")
    ap.add_argument("--limit", type=int, help="at most N cases per suite and kind (sampled)")
    ap.add_argument("--seed", type=int, default=0, help="the --limit sample's seed")
    ap.add_argument("--concurrency", type=int, default=2, help="cases in flight at once")
    ap.add_argument("--data", type=Path, default=EXPORT, help="the exporter's JSONL")
    ap.add_argument("--injecagent", type=Path, default=INJECAGENT)
    ap.add_argument("--no-injecagent", action="store_true")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = ap.parse_args()
    if not args.data.exists():
        print(f"no AgentDojo export at {args.data}.\n{INSTALL}", file=sys.stderr)
        return 2
    with args.data.open(encoding="utf-8") as f:
        cases = agentdojo_cases(f)
    if args.suite:
        unknown = set(args.suite) - {c.group for c in cases}
        if unknown:
            raise SystemExit(f"unknown suite(s): {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.group in args.suite]
    if not args.no_injecagent:
        if args.injecagent.exists():
            from scripts.bench_injecagent import replay_cases

            cases += replay_cases(json.loads(args.injecagent.read_text(encoding="utf-8")))
        else:
            print(f"(no InjecAgent data at {args.injecagent}: skipped)", file=sys.stderr)
    cases = select(cases, args.limit, args.seed)
    n_calls = sum(len(c.steps) for c in cases)
    print(f"replaying {len(cases)} cases ({n_calls} calls) through the proxy ...", flush=True)
    stored, rtt = replay(cases, args.concurrency)
    calls = calls_of(cases, stored)
    print("scoring the same requests in process, timed ...", flush=True)
    timed = rescore(cases)
    agree = sum(
        s == row.score
        for c in cases
        for s, row in zip(timed.scores[c.key], stored[c.session], strict=True)
    )
    e50, e99 = p50_p99(timed.engine_ms)
    i50, i99 = p50_p99(timed.inline_ms)
    r50, r99 = p50_p99(rtt)
    timing = {"engine_p50": e50, "engine_p99": e99, "inline_p50": i50, "inline_p99": i99,
              "rtt_p50": r50, "rtt_p99": r99, "agree": agree, "calls": n_calls}  # fmt: skip
    result = report(cases, [c for c in calls if c.label in ("harmful", "benign", "twin")], timing)
    result |= {
        "command": COMMAND + " " + " ".join(sys.argv[1:]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "agentdojo": {"version": VERSION, "attack": "important_instructions"},
        "limit": args.limit,
        "seed": args.seed,
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"(written to {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
