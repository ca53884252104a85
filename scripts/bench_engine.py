"""Benchmark the scoring engine over the labelled corpus: p50/p99 per event, printed as a table.

    .venv/bin/python scripts/bench_engine.py [--iterations 200]

Target (DESIGN.md §8 / brief): p99 <= 1 ms per event for `Engine.score`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.scoring import Engine, HistoryFacts, decode_action_event  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "scoring_scenarios.yaml"


def load_corpus() -> list[tuple[bytes, HistoryFacts | None]]:
    """(raw JSON event, history) for every scenario."""
    raw = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))["scenarios"]
    out: list[tuple[bytes, HistoryFacts | None]] = []
    for s in raw:
        event: dict[str, Any] = {"event_id": s["name"], **s["event"]}
        history = msgspec.convert(s["history"], HistoryFacts) if s.get("history") else None
        out.append((msgspec.json.encode(event), history))
    return out


def percentile(sorted_ns: list[int], q: float) -> float:
    """The q-quantile (0..1) of sorted nanosecond samples, in microseconds."""
    idx = min(len(sorted_ns) - 1, round(q * (len(sorted_ns) - 1)))
    return sorted_ns[idx] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()

    t0 = time.perf_counter()
    engine = Engine.load()
    load_ms = (time.perf_counter() - t0) * 1000
    corpus = load_corpus()
    events = [(decode_action_event(raw), h) for raw, h in corpus]

    for event, history in events:  # warm caches (field classification)
        engine.score(event, history)

    decode_ns: list[int] = []
    score_ns: list[int] = []
    total_ns: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(args.iterations):
        for raw, history in corpus:
            a = clock()
            event = decode_action_event(raw)
            b = clock()
            engine.score(event, history)
            c = clock()
            decode_ns.append(b - a)
            score_ns.append(c - b)
            total_ns.append(c - a)

    print(
        f"engine: {len(engine.ruleset.rules)} rules from {len(engine.ruleset.files)} files, "
        f"loaded in {load_ms:.1f} ms; corpus {len(corpus)} events x {args.iterations} iterations"
    )
    print(f"{'stage':<18}{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}{'max us':>10}{'mean us':>10}")
    for name, samples in (
        ("decode", decode_ns),
        ("score", score_ns),
        ("decode+score", total_ns),
    ):
        s = sorted(samples)
        print(
            f"{name:<18}{percentile(s, 0.5):>10.1f}{percentile(s, 0.9):>10.1f}"
            f"{percentile(s, 0.99):>10.1f}{s[-1] / 1000:>10.1f}"
            f"{statistics.fmean(s) / 1000:>10.1f}"
        )
    p99_ms = percentile(sorted(score_ns), 0.99) / 1000
    verdict = "OK" if p99_ms <= 1.0 else "OVER"
    print(f"score p99 = {p99_ms:.3f} ms (target <= 1 ms): {verdict}")
    print(f"throughput: {len(total_ns) / (sum(total_ns) / 1e9):,.0f} events/s on one core")


if __name__ == "__main__":
    main()
