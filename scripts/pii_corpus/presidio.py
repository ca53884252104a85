"""presidio-evaluator's sentence templates, their placeholders filled with Faker."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from faker import Faker

from .locales import TEXT_LOCALES
from .records import Item

TEMPLATES = Path(__file__).parent.parent / "data" / "presidio_templates.txt"

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_EPOCH_START, _EPOCH_END = datetime(1950, 1, 1), datetime(2025, 1, 1)
_EN_US = Faker("en_US")  # only for placeholders a locale lacks; seeded in generate()
_NATIONALITIES = ("French", "German", "Kenyan", "Brazilian", "Japanese", "Canadian", "Indian")


def _presidio_value(name: str, fake: Faker, rng: random.Random) -> tuple[str, str | None]:
    """A value for one template placeholder, and the scanner type it counts as (or None)."""
    scored: dict[str, Callable[[], tuple[str, str]]] = {
        "credit_card_number": lambda: (fake.credit_card_number(), "credit_card"),
        "phone_number": lambda: (fake.phone_number(), "phone"),
        "email": lambda: (fake.email(), "email"),
        "iban": lambda: (fake.iban(), "iban"),
        "ssn": lambda: (fake.ssn(), "ssn"),
        "ip_address": lambda: (
            (fake.ipv4_public(), "ipv4") if rng.random() < 0.6 else (fake.ipv6(), "ipv6")
        ),
    }
    if name in scored:
        return scored[name]()
    other: dict[str, Callable[[], str]] = {
        "person": fake.name,
        "organization": fake.company,
        "age": lambda: str(rng.randint(18, 90)),
        "nationality": lambda: rng.choice(_NATIONALITIES),
        "nation_woman": lambda: rng.choice(_NATIONALITIES) + " woman",
        "nation_plural": lambda: rng.choice(_NATIONALITIES) + "s",
        "zipcode": fake.postcode,
        "us_driver_license": lambda: (
            rng.choice(string.ascii_uppercase) + str(rng.randint(10**6, 10**7))
        ),
        # Faker's own date providers count back from today: fixed bounds keep the corpus stable
        "date_time": lambda: str(fake.date_time_between(_EPOCH_START, _EPOCH_END)),
        "date_of_birth": lambda: str(fake.date_between(_EPOCH_START, _EPOCH_END)),
        "year": lambda: str(rng.randint(1950, 2025)),
        "day_of_week": lambda: rng.choice(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")),
        "first_name_nonbinary": fake.first_name,
    }
    if name in other:
        return other[name](), None
    try:
        value = getattr(fake, name)()
    except AttributeError:  # a provider this locale lacks (state_abbr outside the US, ...)
        value = getattr(_EN_US, name)()
    return str(value), None


def presidio_items(fakers: dict[str, Faker], rng: random.Random, n: int) -> Iterator[Item]:
    """The templates in turn, each filled in a locale chosen in turn."""
    # the file spells line breaks inside a template as a literal backslash-n
    lines = TEMPLATES.read_text("utf-8").splitlines()
    templates = [t.replace("\\n", "\n") for t in lines if t.strip()]
    for i in range(n):
        template = templates[i % len(templates)]
        loc = TEXT_LOCALES[i % len(TEXT_LOCALES)]  # 209 and 9 are coprime: 3 locales per template
        fake = fakers["en_US"] if "ssn" in template else fakers[loc]
        labels: Counter[str] = Counter()

        def fill(m: re.Match[str], fake: Faker = fake, labels: Counter[str] = labels) -> str:
            value, kind = _presidio_value(m.group(1), fake, rng)
            if kind is not None:
                labels[kind] += 1
            return value

        text = _PLACEHOLDER.sub(fill, template)
        kind = "presidio/" + ("+".join(sorted(labels)) or "none")
        yield Item("presidio", kind, loc, text, dict(labels), value=text)
