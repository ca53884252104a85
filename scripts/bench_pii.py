"""Evaluate the PII scanner on the generated corpus: per-type P/R/F1, per carrier shape, µs.

Usage: scripts/govrix bench pii [--seed N] [--corpus FILE] [--runs N] [--misses N] [--json FILE]

The corpus is built by :mod:`scripts.pii_corpus` (fixed seed, written to
``.govrix/bench/pii_corpus.jsonl`` unless ``--corpus`` names an existing file). Each record is a
request body; it is scanned the way the recorder scans a request: the provider's parser extracts
the ``(json_path, text)`` segments (``addon.providers.parse_request``; ``addon.mcp`` for MCP
``tools/call``), then the scanner counts findings per type (:func:`scan`, the one place that knows
the scanner's API). The "all strings" column scans every JSON string of the body instead, to tell
what the parsers do not extract from what the scanner misses.

Matching rule, applied to every record and type alike: with ``L`` values of a type labelled and
``F`` reported (summed over the record's JSON paths), ``TP = min(L, F)``, ``FN = L - TP``,
``FP = F - TP``. Positions are not compared (findings carry none). Micro scores sum TP/FP/FN
over the eight types. A hard-negative record is "hit" when it yields any finding.

Timing (median of ``--runs``): the recorder's path (parse + scan) and the scan alone on a clean
~4 KB OpenAI chat body; and µs per finding, the median over records with findings of the first
(cold-cache) scan's time divided by the findings it reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from addon import pii
from addon.mcp import parse_tools_call, request_info
from addon.providers import detect, parse_request
from scripts import pii_corpus
from scripts.pii_corpus import CARRIER, SHAPES, TYPES

Segments = list[tuple[str, str]]


def scan(segments: Segments) -> Counter[str]:
    """Findings per type from the scanner the recorder uses (the only call into addon.pii)."""
    counts: Counter[str] = Counter()
    for finding in pii.scan_segments(segments):
        counts[finding.type] += finding.count
    return counts


_ROUTES = {
    "openai": ("api.openai.com", "/v1/chat/completions"),
    "anthropic": ("api.anthropic.com", "/v1/messages"),
}


def recorder_segments(carrier: str, body: str) -> Segments:
    """The segments the recorder hands the scanner for this request body."""
    if carrier == "text":
        return [("$", body)]
    raw = body.encode()
    if carrier == "mcp":
        call = parse_tools_call(raw)
        return request_info(call).text if call is not None else []
    host, path = _ROUTES[carrier]
    detected = detect(host, path)
    assert detected is not None, (host, path)
    provider, endpoint = detected
    return parse_request(provider, endpoint, path, raw).text


def _strings(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _strings(value, f"{path}[{i}]")


def all_strings(carrier: str, body: str) -> Segments:
    """Every string in the body (the whole text for plain prompts), parsers aside."""
    return [("$", body)] if carrier == "text" else list(_strings(json.loads(body), "$"))


# --- scoring -------------------------------------------------------------------------------------


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, labelled: int, found: int) -> None:
        hit = min(labelled, found)
        self.tp += hit
        self.fn += labelled - hit
        self.fp += found - hit

    @property
    def labelled(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / self.labelled if self.labelled else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Scored:
    record: dict[str, Any]
    found: Counter[str]
    found_all: Counter[str]
    cold_us: float
    per_type: dict[str, Tally] = field(default_factory=dict)


def score(records: list[dict[str, Any]]) -> list[Scored]:
    out = []
    for r in records:
        carrier = CARRIER[r["shape"]]
        segments = recorder_segments(carrier, r["body"])
        start = time.perf_counter_ns()
        found = scan(segments)
        cold_us = (time.perf_counter_ns() - start) / 1000
        s = Scored(r, found, scan(all_strings(carrier, r["body"])), cold_us)
        for t in TYPES:
            tally = Tally()
            tally.add(r["labels"].get(t, 0), found.get(t, 0))
            s.per_type[t] = tally
        out.append(s)
    return out


def total(tallies: Iterable[Tally]) -> Tally:
    t = Tally()
    for x in tallies:
        t.tp, t.fp, t.fn = t.tp + x.tp, t.fp + x.fp, t.fn + x.fn
    return t


def _f(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"  # NaN: nothing labelled / nothing reported


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(scored: list[Scored]) -> list[str]:
    out: list[str] = []
    by_type = {t: total(s.per_type[t] for s in scored) for t in TYPES}
    micro = total(by_type.values())
    rows = [
        [t, x.labelled, x.tp, x.fp, x.fn, _f(x.precision), _f(x.recall), _f(x.f1)]
        for t, x in by_type.items()
    ]
    rows.append(
        [
            "**micro**",
            micro.labelled,
            micro.tp,
            micro.fp,
            micro.fn,
            _f(micro.precision),
            _f(micro.recall),
            _f(micro.f1),
        ]
    )
    out += ["### Per type", "", table(["type", "labelled", "TP", "FP", "FN", "P", "R", "F1"], rows)]

    rows = []
    for shape in SHAPES:
        group = [s for s in scored if s.record["shape"] == shape]
        x = total(t for s in group for t in s.per_type.values())
        every = Tally()
        for s in group:
            for t in TYPES:
                every.add(s.record["labels"].get(t, 0), s.found_all.get(t, 0))
        rows.append(
            [
                shape,
                len(group),
                x.labelled,
                x.fp,
                _f(x.precision),
                _f(x.recall),
                _f(x.f1),
                _f(every.recall),
            ]
        )
    out += [
        "",
        "### Per carrier shape (micro over types)",
        "",
        table(["shape", "records", "labelled", "FP", "P", "R", "F1", "R, all strings"], rows),
    ]

    rows = []
    for t in TYPES:
        cells = []
        for shape in SHAPES:
            x = total(s.per_type[t] for s in scored if s.record["shape"] == shape)
            cells.append(_f(x.recall))
        rows.append([t, *cells])
    out += ["", "### Recall, type x shape", "", table(["type", *SHAPES], rows)]

    rows = []
    by_vendor: dict[str, list[Scored]] = defaultdict(list)
    for s in scored:
        if s.record["vendor"]:
            by_vendor[s.record["vendor"]].append(s)
    groups: dict[str, Tally] = defaultdict(Tally)
    for vendor, group in by_vendor.items():
        x = total(s.per_type["secret"] for s in group)
        g = group[0].record["vendor_group"]
        groups[g] = total([groups[g], x])
        rows.append([vendor, g, x.labelled, x.tp, _f(x.recall)])
    out += [
        "",
        "### Secrets by vendor (recall; `listed` = named in issue 11)",
        "",
        table(["vendor", "group", "labelled", "found", "R"], rows),
        "",
        "Secret recall by group: "
        + ", ".join(f"{g} {_f(x.recall)} ({x.tp}/{x.labelled})" for g, x in sorted(groups.items())),
    ]

    rows = []
    for fmt in sorted({s.record["phone_format"] for s in scored if s.record["phone_format"]}):
        x = total(s.per_type["phone"] for s in scored if s.record["phone_format"] == fmt)
        rows.append([fmt, x.labelled, x.tp, _f(x.recall)])
    out += ["", "### Faker phones by format", "", table(["format", "labelled", "found", "R"], rows)]
    locale_recall = []
    for loc in dict.fromkeys(s.record["locale"] for s in scored if s.record["phone_format"]):
        x = total(
            s.per_type["phone"]
            for s in scored
            if s.record["phone_format"] and s.record["locale"] == loc
        )
        locale_recall.append(f"{loc} {_f(x.recall)}")
    out += ["", "Phone recall by locale: " + ", ".join(locale_recall)]

    rows = []
    for kind in dict.fromkeys(s.record["kind"] for s in scored if s.record["source"] == "negative"):
        group = [s for s in scored if s.record["kind"] == kind]
        hits = [s for s in group if sum(s.found.values())]
        fp_types: Counter[str] = Counter()
        for s in hits:
            fp_types.update(s.found)
        rows.append(
            [
                kind.removeprefix("neg/"),
                len(group),
                len(hits),
                ", ".join(f"{t} {n}" for t, n in fp_types.most_common()) or "-",
            ]
        )
    neg = [s for s in scored if s.record["source"] == "negative"]
    neg_hit = sum(1 for s in neg if sum(s.found.values()))
    out += [
        "",
        f"### Hard negatives ({neg_hit} of {len(neg)} records with a finding)",
        "",
        table(["category", "records", "with a finding", "findings by type"], rows),
    ]

    rows = []
    for source in dict.fromkeys(s.record["source"] for s in scored):
        group = [s for s in scored if s.record["source"] == source]
        x = total(t for s in group for t in s.per_type.values())
        rows.append([source, len(group), x.labelled, x.fp, _f(x.precision), _f(x.recall)])
    out += ["", "### By source", "", table(["source", "records", "labelled", "FP", "P", "R"], rows)]
    return out


def results(scored: list[Scored]) -> dict[str, Any]:
    """The scores as data (``--json``), to compare two runs without parsing tables."""

    def tally(ts: Iterable[Tally]) -> dict[str, float]:
        x = total(ts)
        return {"tp": x.tp, "fp": x.fp, "fn": x.fn, "p": x.precision, "r": x.recall, "f1": x.f1}

    def where(key: str) -> dict[str, dict[str, float]]:
        values = dict.fromkeys(s.record[key] for s in scored if s.record[key])
        return {
            v: tally(t for s in scored if s.record[key] == v for t in s.per_type.values())
            for v in values
        }

    return {
        "types": {t: tally(s.per_type[t] for s in scored) for t in TYPES},
        "micro": tally(t for s in scored for t in s.per_type.values()),
        "shapes": where("shape"),
        "vendors": where("vendor"),
        "vendor_groups": where("vendor_group"),
        "phone_formats": where("phone_format"),
        "negatives_hit": {
            kind: sum(1 for s in scored if s.record["kind"] == kind and sum(s.found.values()))
            for kind in dict.fromkeys(
                s.record["kind"] for s in scored if s.record["source"] == "negative"
            )
        },
    }


def misses(scored: list[Scored], limit: int) -> list[str]:
    """The first ``limit`` records whose counts differ from their labels, to read by hand."""
    out: list[str] = []
    for s in scored:
        labels = Counter(s.record["labels"])
        if +s.found != +labels and len(out) < limit:
            out.append(
                f"{s.record['id']} {s.record['kind']} {s.record['shape']} "
                f"labels={dict(labels)} found={dict(s.found)}\n    {s.record['body'][:300]!r}"
            )
    return out


# --- timing --------------------------------------------------------------------------------------

PROSE = (
    "You are a helpful assistant that answers concisely and cites the documents you used.",
    "Summarize the following meeting notes in five bullet points and keep the tone neutral.",
    "The team met on 2024-03-15 at 10:30 to discuss the Q2 roadmap and the hiring plan.",
    "We shipped version 2.4.1 of the SDK last week; latency dropped by 23% after the change.",
    "Action items: write the design doc, update the runbook, and review PR #1234 by Friday.",
    "The invoice total was $1,249.99 and the discount applies to orders over 500 units.",
    "Error rates spiked between 14:05 and 14:20 UTC while the cache warmed up again.",
    "Our retention is 87.5% after 90 days, up from 81% in the previous cohort.",
)


def clean_body(size: int = 4096) -> str:
    """An OpenAI chat request of ~``size`` bytes whose text carries no PII."""
    turns: list[dict[str, str]] = [{"role": "system", "content": PROSE[0]}]
    i = 0
    while len(json.dumps({"model": "gpt-4o-mini", "messages": turns})) < size - 200:
        role = "user" if i % 2 == 0 else "assistant"
        turns.append(
            {"role": role, "content": " ".join(PROSE[(i + k) % len(PROSE)] for k in range(3))}
        )
        i += 1
    return json.dumps({"model": "gpt-4o-mini", "messages": turns})


def median_us(fns: list[Callable[[], object]], runs: int) -> list[tuple[float, float]]:
    """Median and 90th percentile in µs of each function over ``runs`` calls, after a warm-up.

    The calls alternate, so on a shared machine every function sees the same load.
    """
    for _ in range(min(50, runs)):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - start) / 1000)
    return [(statistics.median(x), sorted(x)[int(len(x) * 0.9)]) for x in samples]


def blanked(text: str) -> str | None:
    """``text`` with every span the scanner matches replaced by spaces (same length, so a JSON
    document stays valid and its structure, keys and every other byte stay as they were), or
    None when blanking does not leave it clean."""
    for _ in range(4):
        matches = pii.scan_text(text)
        if not matches:
            return text
        for match in matches:
            text = text[: match.start] + " " * (match.end - match.start) + text[match.end :]
    return None


JSON_SHAPES = frozenset({"openai_tool_args", "openai_tool_result", "anthropic_tool_use"})


def marginal_us(scored: list[Scored], base: Segments, repeats: int = 7) -> dict[str, list[float]]:
    """µs per finding at the margin: each record's segments appended to a clean ~4 KB body,
    minus the same with the found values blanked out (:func:`blanked`), divided by the
    findings; both warm (scanned once before), median of ``repeats`` alternating calls.

    This is what one more value costs a request: validation, the JSON path inside tool
    arguments, the extra RE2 calls; the text around it is paid for in both. Records whose
    blanked twin is not clean, or whose blanking removed nothing, are left out (counted).
    """
    out: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        n = sum(s.found.values())
        if not n:
            continue
        carrier = CARRIER[s.record["shape"]]
        segments = recorder_segments(carrier, s.record["body"])
        twin_texts = [blanked(text) for _, text in segments]
        if any(t is None for t in twin_texts) or scan(
            twin := [(path, t or "") for (path, _), t in zip(segments, twin_texts, strict=True)]
        ):
            out["skipped"].append(0.0)
            continue
        with_values, without = base + segments, base + twin
        scan(with_values), scan(without)
        a: list[int] = []
        b: list[int] = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            scan(with_values)
            a.append(time.perf_counter_ns() - start)
            start = time.perf_counter_ns()
            scan(without)
            b.append(time.perf_counter_ns() - start)
        value = (statistics.median(a) - statistics.median(b)) / 1000 / n
        out["all"].append(value)
        out[
            "JSON text (tool arguments and results)"
            if s.record["shape"] in JSON_SHAPES
            else "plain text and content parts"
        ].append(value)
        out[f"type: {s.record['kind'].split('/')[0]}"].append(value)
    return out


def timing(scored: list[Scored], runs: int) -> list[str]:
    body = clean_body()
    segments = recorder_segments("openai", body)
    assert not scan(segments), "the clean body must stay clean"
    (path_med, path_p90), (scan_med, scan_p90) = median_us(
        [lambda: scan(recorder_segments("openai", body)), lambda: scan(segments)], runs
    )
    per_finding = [s.cold_us / n for s in scored if (n := sum(s.found.values()))]
    margins = marginal_us(scored, segments)
    skipped = len(margins.pop("skipped", []))

    def row(label: str, values: list[float]) -> list[str]:
        ordered = sorted(values)
        return [
            f"{label} ({len(values):,} records)",
            f"{statistics.median(values):.1f}",
            f"{ordered[int(len(ordered) * 0.9)]:.1f}",
        ]

    return [
        "",
        "### Timing",
        "",
        table(
            ["measure", "median µs", "p90 µs"],
            [
                [
                    f"clean {len(body):,} B OpenAI body: parse + scan (recorder path)",
                    f"{path_med:.1f}",
                    f"{path_p90:.1f}",
                ],
                [
                    f"clean {len(body):,} B OpenAI body: scan only",
                    f"{scan_med:.1f}",
                    f"{scan_p90:.1f}",
                ],
                [
                    f"per finding, cold: a record's first scan / its findings "
                    f"({len(per_finding):,} records)",
                    f"{statistics.median(per_finding):.1f}",
                    f"{sorted(per_finding)[int(len(per_finding) * 0.9)]:.1f}",
                ],
            ],
        ),
        "",
        "Per finding at the margin (warm; a clean 4 KB body plus the record, minus the same with "
        f"the found values blanked; {skipped} records left out, their twin not clean):",
        "",
        table(
            ["records", "median µs per finding", "p90"],
            [row(label, values) for label, values in sorted(margins.items(), key=_margin_order)],
        ),
    ]


def _margin_order(item: tuple[str, list[float]]) -> tuple[int, str]:
    label = item[0]
    return (0 if label == "all" else 2 if label.startswith("type:") else 1, label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=pii_corpus.SEED)
    parser.add_argument("--corpus", type=Path, help="score this JSONL instead of generating one")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--misses", type=int, default=0, help="print the first N mismatches")
    parser.add_argument("--json", type=Path, help="also write the scores to this file")
    args = parser.parse_args()

    path = args.corpus
    if path is None:
        path = pii_corpus.DEFAULT_OUT
        pii_corpus.write_jsonl(pii_corpus.generate(args.seed), path)
    data = path.read_bytes()
    records = [json.loads(line) for line in data.decode().splitlines()]
    scored = score(records)
    print(
        f"Corpus {path}: {len(records):,} records, {len(data):,} B, "
        f"sha256 {hashlib.sha256(data).hexdigest()[:16]}, seed {args.seed}, "
        f"Faker {version('faker')}\n"
    )
    print("\n".join(report(scored)))
    print("\n".join(timing(scored, args.runs)))
    if args.json:
        args.json.write_text(json.dumps(results(scored), indent=1))
    if args.misses:
        print("\n### Mismatches\n")
        print("\n".join(misses(scored, args.misses)))


if __name__ == "__main__":
    main()
