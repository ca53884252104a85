"""The labelled corpus of the PII benchmark: seeded, deterministic, independent of addon/pii.

Usage: .venv/bin/python -m scripts.pii_corpus [--seed N] [--out FILE]

Every record is one request as the proxy would see it, with the values it carries labelled by
type and count. The values come from sources that know nothing about our scanner:

- Faker (the version in uv.lock) in 30+ locales: phone numbers in each locale's national format
  and in international ``+CC`` / ``00CC`` forms, with and without extensions; e-mail addresses;
  US SSNs (dashed, spaced, bare beside "SSN"); card numbers of ten brands (bare, grouped, dashed);
  public and private IPv4; IPv6 (compressed, exploded, IPv4-mapped); IBANs of 14 countries
  (compact and grouped in fours).
- presidio-evaluator's sentence templates (``scripts/data/presidio_templates.txt``, MIT), their
  placeholders filled with Faker; templates without a placeholder we score become negatives.
- Secrets of 39 vendors, random tokens built from each vendor's published token format (prefix,
  alphabet, length, GitHub/npm CRC32 checksum), in the contexts they leak from (``.env`` lines,
  ``Authorization`` headers, client constructors, shell exports).
- Hard negatives: strings that look like PII and are not (version strings, OIDs, EAN-13 barcodes,
  placeholder keys, clone URLs, UUIDs, timestamps, order numbers, hashes, ISBNs, zip codes,
  prices, C++ scopes, MAC addresses, coordinates).

Each value is wrapped in one of :data:`SHAPES` (plain text, OpenAI chat bodies with the value in
user content, content parts, tool-call ``arguments`` or a tool result, Anthropic messages with
``tool_use`` / ``tool_result`` blocks, MCP ``tools/call``), cycling so every type meets every
shape. Labels use the scanner's public type names (``Finding.type``): email, phone, ssn,
credit_card, ipv4, ipv6, iban, secret.

The package, by concern: ``records.py`` (:class:`Record`, :class:`Item`, :data:`TYPES`),
``locales.py`` (the Faker locales), ``faker_values.py`` (phones, e-mails, SSNs, cards, IPs,
IBANs), ``presidio.py`` (the filled templates), ``vendors.py`` (:data:`VENDORS`, the secrets),
``negatives.py`` (the hard negatives), ``alphabets.py`` (token alphabets), ``carriers.py``
(:data:`SHAPES`, :data:`CARRIER`, the request bodies), ``corpus.py`` (the counts,
:func:`generate` in its fixed draw order, the JSONL file and its digest), ``__main__.py`` (the
command line).
"""

from __future__ import annotations

from .carriers import CARRIER, SHAPES
from .corpus import (
    CARDS_PER_BRAND,
    DEFAULT_OUT,
    EMAILS,
    IBANS_PER_LOCALE,
    IPS,
    MIXED,
    NEGATIVES_PER_CATEGORY,
    PHONES_PER_LOCALE,
    PRESIDIO,
    SECRETS_PER_VENDOR,
    SEED,
    SSNS,
    digest,
    generate,
    summary,
    to_jsonl,
    write_jsonl,
)
from .faker_values import CARD_BRANDS
from .negatives import NEGATIVE_CATEGORIES
from .records import TYPES, Item, Record
from .vendors import VENDORS

__all__ = [
    "CARDS_PER_BRAND",
    "CARD_BRANDS",
    "CARRIER",
    "DEFAULT_OUT",
    "EMAILS",
    "IBANS_PER_LOCALE",
    "IPS",
    "MIXED",
    "NEGATIVES_PER_CATEGORY",
    "NEGATIVE_CATEGORIES",
    "PHONES_PER_LOCALE",
    "PRESIDIO",
    "SECRETS_PER_VENDOR",
    "SEED",
    "SHAPES",
    "SSNS",
    "TYPES",
    "VENDORS",
    "Item",
    "Record",
    "digest",
    "generate",
    "summary",
    "to_jsonl",
    "write_jsonl",
]
