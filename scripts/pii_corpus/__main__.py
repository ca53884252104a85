"""The labelled corpus of the PII benchmark: seeded, deterministic, independent of addon/pii.

``python -m scripts.pii_corpus [--seed N] [--out FILE]`` writes the corpus and prints its counts;
see the package docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .corpus import DEFAULT_OUT, SEED, digest, generate, summary, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.pii_corpus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    records = generate(args.seed)
    write_jsonl(records, args.out)
    size = args.out.stat().st_size
    print(f"{len(records)} records -> {args.out} ({size:,} B, sha256 {digest(records)})")
    for name, counts in summary(records).items():
        if name != "locales":
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"locales: {len(summary(records)['locales'])}")


if __name__ == "__main__":
    main()
