"""PII and secret scanner for the proxy hot path (DESIGN.md §4 and §5 "PII").

One compiled RE2 alternation finds candidates in a single linear pass over the UTF-8 bytes; each
candidate is then validated. Text without candidates costs one RE2 pass and nothing else, which
is the common case for prompts. Results carry types, counts and locations only: a
:class:`Finding` never holds the matched value.

Modules, one concern each:

- ``engine``: the single pass (``DETECTORS`` in priority order) and text scanning.
- ``patterns``: candidate patterns and context words for contact data, ids and addresses.
- ``validators``: email, card (issuer, length, Luhn), SSN, IBAN (length, mod-97), IPv4/IPv6.
- ``phones``: international and national formats for the configured regions, metadata checks.
- ``rules``: gitleaks' vendored rule set and our own (``data/``), split for the single pass.
- ``secrets``: validating secret candidates; the generic keyword+entropy rule; placeholders.
- ``documents``: JSON paths, segments, and JSON text inside strings (tool arguments).
- ``redaction`` and ``streaming``: replacing matches, and counting them in streamed deltas.

Precision/recall decisions (``tests/data/pii_corpus.jsonl`` and ``tests/test_pii.py`` pin them):

- phone: see ``phones.py``; '+'/'00' numbers of any country (valid or of a possible length),
  national formats for ``GOVRIX_PII_PHONE_REGIONS``; a bare digit run only with a phone word.
- ssn: ``AAA-GG-SSSS`` or ``AAA GG SSSS`` with the SSA rules (area not 000, 666 or 9xx, group not
  00, serial not 0000); a bare 9-digit run only with an SSN word in its sentence or key
  (``ssn``, ``social_security_number``, ``Soc. Sec. No.``, ``taxpayer``) or right after it.
- credit_card: 12-19 digits, one kind of separator, Luhn, and an issuer range whose lengths fit
  (Visa 13/16/19, JCB 15 with 2131/1800 and 16-19 in the 35 block, Maestro 12-19, ...). Visa's
  13 digits and Maestro's 12-15 collide with EAN/UPC barcodes, so they count only when grouped
  like a card (4-4-4-1, 4-4-5) or with a card word nearby (card, visa, cc, payment, cvv, ...).
  A group continuing longer digit groups (an IBAN's tail) is not a card.
- ipv4: four octets 0-255 without leading zeros; not part of a longer dotted run (an OID), not
  after a version or OID word (``v``, ``version=``, ``AssemblyVersion("``, ``==``, ``oid``,
  ``objectIdentifier``, ``snmp``), not a well-known OID arc (``1.3.6.1``, ``2.5.4.x``,
  ``2.5.29.x``).
- ipv6: ``ipaddress`` must accept it, with a decimal digit and four hex digits (not ``add::bead``).
- email: RFC-shaped with an alphabetic TLD; not ``icon@2x.png``, not ``git@github.com:org/repo``.
- iban: country length and mod-97.
- secret: vendor rules (gitleaks, loaded with a token end that fits prose, markdown and JSON text
  inside JSON; plus ``data/local_rules.toml`` for formats gitleaks lacks), JWTs whose header has
  ``alg``, private key blocks, a secret word assigned (or, in prose, "is") a high-entropy value;
  placeholders are not secrets.
- context: ``scan_segments`` gives each segment its key ("ssn: ..." for an MCP argument) and reads
  the content parts of one message as one text.

Cost, medians on a shared 2-core machine (2026-12-02): ~12 µs for a clean 4 KB prompt's RE2 pass
(~20 µs through ``scan_segments``), ~20-25 µs per value found when the text was seen before and
60-100 µs the first time (phone metadata, new DFA states), 2.4 µs per IBAN check (stdnum: 22 µs);
JSON with a match costs a walk of its leaves and a scan of the leaves that hold the matches.
``scripts/govrix bench pii`` measures the recorder's path. For streams, feed one network chunk at a
time rather than one SSE event.
"""

from __future__ import annotations

from addon.pii.documents import json_segments, scan_json, scan_segments
from addon.pii.engine import DETECTORS, Finding, Match, clear_caches, scan_text
from addon.pii.patterns import PII_TYPES
from addon.pii.phones import configure as configure_phone_regions
from addon.pii.redaction import redact_json, redact_text
from addon.pii.streaming import StreamScanner

__all__ = [
    "DETECTORS",
    "PII_TYPES",
    "Finding",
    "Match",
    "StreamScanner",
    "clear_caches",
    "configure_phone_regions",
    "json_segments",
    "redact_json",
    "redact_text",
    "scan_json",
    "scan_segments",
    "scan_text",
]
