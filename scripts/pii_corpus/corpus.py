"""The whole corpus: how many of each, the seeded draw in order, the JSONL file and its digest."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from faker import Faker

from .carriers import SHAPES, carry
from .faker_values import card_items, email_items, iban_items, ip_items, phone_items, ssn_items
from .locales import IBAN_LOCALES, PHONE_LOCALES, TEXT_LOCALES
from .negatives import negative_items
from .presidio import _EN_US, presidio_items
from .records import Item, Record
from .vendors import secret_items

SEED = 20261202
DEFAULT_OUT = Path(".govrix/bench/pii_corpus.jsonl")


def _fakers(seed: int, locales: tuple[str, ...]) -> dict[str, Faker]:
    out: dict[str, Faker] = {}
    for i, loc in enumerate(dict.fromkeys(locales)):
        fake = Faker(loc)
        fake.seed_instance(seed * 1000 + i)
        out[loc] = fake
    return out


def mixed_items(pools: dict[str, list[Item]], rng: random.Random, n: int) -> Iterator[Item]:
    """Two to four values of different types in one prompt, as a support ticket carries them."""
    kinds = [
        k
        for k in ("email", "phone", "credit_card", "iban", "ssn", "ipv4", "ipv6", "secret")
        if pools[k]
    ]
    for _ in range(n):
        chosen = rng.sample(kinds, rng.randint(2, 4))
        parts, labels = [], Counter[str]()
        for kind in chosen:
            item = rng.choice(pools[kind])
            parts.append(item.text)
            labels.update(item.labels)
        yield Item(
            "mixed",
            "mixed/" + "+".join(sorted(chosen)),
            "en_US",
            "\n".join(parts),
            dict(labels),
            value="\n".join(parts),
        )


# How many of each; the test checks the generator keeps these promises.
PHONES_PER_LOCALE = 20
EMAILS = 300
SSNS = 150
CARDS_PER_BRAND = 21
IPS = 150  # per family
IBANS_PER_LOCALE = 16
PRESIDIO = 627  # three passes over the 209 templates
SECRETS_PER_VENDOR = 21
NEGATIVES_PER_CATEGORY = 60
MIXED = 150


def generate(seed: int = SEED) -> list[Record]:
    """The whole corpus for ``seed``; the same list every time for the same seed and Faker."""
    rng = random.Random(seed)
    locales = (
        [loc for loc, _, _ in PHONE_LOCALES] + list(IBAN_LOCALES) + list(TEXT_LOCALES) + ["en_US"]
    )
    fakers = _fakers(seed, tuple(locales))
    _EN_US.seed_instance(seed)
    us = fakers["en_US"]
    pools: dict[str, list[Item]] = {
        "phone": list(phone_items(fakers, rng, PHONES_PER_LOCALE)),
        "email": list(email_items(fakers, rng, EMAILS)),
        "ssn": list(ssn_items(us, rng, SSNS)),
        "credit_card": list(card_items(us, rng, CARDS_PER_BRAND)),
        "iban": list(iban_items(fakers, rng, IBANS_PER_LOCALE)),
        "secret": list(secret_items(rng, SECRETS_PER_VENDOR)),
    }
    ips = list(ip_items(us, rng, IPS))
    pools["ipv4"] = [i for i in ips if "ipv4" in i.labels]
    pools["ipv6"] = [i for i in ips if "ipv6" in i.labels]
    items = [item for pool in pools.values() for item in pool]
    items += presidio_items(fakers, rng, PRESIDIO)
    items += negative_items(us, rng, NEGATIVES_PER_CATEGORY)
    items += mixed_items(pools, rng, MIXED)

    records: list[Record] = []
    per_kind: Counter[str] = Counter()
    for n, item in enumerate(items):
        family = item.kind.split("/")[0]
        shape = SHAPES[per_kind[family] % len(SHAPES)]  # cycle per family: every type, every shape
        per_kind[family] += 1
        records.append(
            Record(
                id=f"r{n:05d}",
                source=item.source,
                kind=item.kind,
                locale=item.locale,
                shape=shape,
                labels=item.labels,
                body=carry(item, shape, rng, n),
                vendor=item.vendor,
                vendor_group=item.vendor_group,
                phone_format=item.phone_format,
            )
        )
    return records


def to_jsonl(records: list[Record]) -> str:
    """The corpus file's text: one JSON object per record and line."""
    return "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)


def digest(records: list[Record]) -> str:
    """The first 16 hex digits of the corpus file's SHA-256, as BENCHMARKS.md quotes it."""
    return hashlib.sha256(to_jsonl(records).encode()).hexdigest()[:16]


def write_jsonl(records: list[Record], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_jsonl(records), encoding="utf-8")


def summary(records: list[Record]) -> dict[str, Counter[str]]:
    """Counts by source, by shape, by labelled type (values) and by negative category."""
    labels: Counter[str] = Counter()
    for r in records:
        labels.update(r.labels)
    return {
        "source": Counter(r.source for r in records),
        "shape": Counter(r.shape for r in records),
        "labels": labels,
        "negatives": Counter(r.kind for r in records if r.source == "negative"),
        "locales": Counter(r.locale for r in records if r.locale),
    }
