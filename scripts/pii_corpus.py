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
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import ipaddress
import json
import random
import re
import string
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from faker import Faker

SEED = 20261202
DEFAULT_OUT = Path(".govrix/bench/pii_corpus.jsonl")
TEMPLATES = Path(__file__).parent / "data" / "presidio_templates.txt"

TYPES = ("email", "phone", "ssn", "credit_card", "ipv4", "ipv6", "iban", "secret")
SHAPES = (
    "text",
    "openai_user",
    "openai_parts",
    "openai_tool_args",
    "openai_tool_result",
    "anthropic_user",
    "anthropic_tool_use",
    "anthropic_tool_result",
    "mcp_tools_call",
)
# Which API each shape is sent to: the evaluator parses the body as the recorder would.
CARRIER = {
    "text": "text",
    "openai_user": "openai",
    "openai_parts": "openai",
    "openai_tool_args": "openai",
    "openai_tool_result": "openai",
    "anthropic_user": "anthropic",
    "anthropic_tool_use": "anthropic",
    "anthropic_tool_result": "anthropic",
    "mcp_tools_call": "mcp",
}

# (locale, country calling code, trunk prefix dropped in international form)
PHONE_LOCALES = (
    ("en_US", "1", "1"),
    ("en_CA", "1", "1"),
    ("en_GB", "44", "0"),
    ("en_AU", "61", "0"),
    ("en_NZ", "64", "0"),
    ("de_DE", "49", "0"),
    ("de_AT", "43", "0"),
    ("de_CH", "41", "0"),
    ("fr_FR", "33", "0"),
    ("fr_CH", "41", "0"),
    ("es_ES", "34", ""),
    ("it_IT", "39", ""),
    ("nl_NL", "31", "0"),
    ("nl_BE", "32", "0"),
    ("pt_BR", "55", "0"),
    ("pt_PT", "351", ""),
    ("pl_PL", "48", ""),
    ("sv_SE", "46", "0"),
    ("no_NO", "47", ""),
    ("da_DK", "45", ""),
    ("fi_FI", "358", "0"),
    ("cs_CZ", "420", ""),
    ("sk_SK", "421", "0"),
    ("ja_JP", "81", "0"),
    ("ko_KR", "82", "0"),
    ("zh_CN", "86", "0"),
    ("hi_IN", "91", "0"),
    ("ru_RU", "7", "8"),
    ("el_GR", "30", ""),
    ("ro_RO", "40", "0"),
    ("es_MX", "52", ""),
    ("he_IL", "972", "0"),
)
IBAN_LOCALES = (
    "en_GB",
    "de_DE",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
    "pt_PT",
    "pl_PL",
    "de_AT",
    "de_CH",
    "da_DK",
    "fi_FI",
    "cs_CZ",
    "el_GR",
)
CARD_BRANDS = (
    "visa16",
    "visa13",
    "visa19",
    "mastercard",
    "amex",
    "discover",
    "diners",
    "jcb15",
    "jcb16",
    "maestro",
)
# it_IT is left out: its city() draws from a set, so its order follows PYTHONHASHSEED
TEXT_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "pl_PL", "nl_NL", "pt_BR", "en_AU")

ALNUM = string.ascii_letters + string.digits
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
URLSAFE = ALNUM + "-_"
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Record:
    """One labelled request. ``labels`` maps type -> how many values of it ``body`` carries."""

    id: str
    source: str  # faker | presidio | secret | negative | mixed
    kind: str  # what was generated: "phone/intl_00", "secret/github_classic", "neg/oid", ...
    locale: str
    shape: str
    labels: dict[str, int]
    body: str
    vendor: str = ""
    vendor_group: str = ""  # "listed" (named in issue 11) or "other", for secrets only
    phone_format: str = ""


@dataclass
class Item:
    """A labelled text snippet before it is put in a carrier."""

    source: str
    kind: str
    locale: str
    text: str
    labels: dict[str, int]
    value: str = ""  # the bare value, for carriers that put it after a \n or \t
    vendor: str = ""
    vendor_group: str = ""
    phone_format: str = ""


# --- Faker values --------------------------------------------------------------------------------


def _fakers(seed: int, locales: tuple[str, ...]) -> dict[str, Faker]:
    out: dict[str, Faker] = {}
    for i, loc in enumerate(dict.fromkeys(locales)):
        fake = Faker(loc)
        fake.seed_instance(seed * 1000 + i)
        out[loc] = fake
    return out


def _international(national: str, cc: str, trunk: str, rng: random.Random) -> str:
    """``national`` as a caller abroad writes it: ``+CC``, trunk prefix dropped, same grouping."""
    rest = national.strip()
    if re.match(rf"\(?{cc}\)?[ -]", rest):  # Faker's "(351) 912..." already leads with the code
        rest = re.sub(rf"^\(?{cc}\)?[ -]*", "", rest)
    rest = rest.replace("(", "").replace(")", "")
    if trunk and rest.startswith(trunk):
        rest = rest[len(trunk) :].lstrip(" -.")
    if rng.random() < 0.3:  # E.164 as stored in a CRM
        return f"+{cc}{re.sub(r'\D', '', rest)}"
    return f"+{cc} {rest}"


def _phone_format(value: str) -> str:
    base = "intl_plus" if value.startswith(("+", "(+")) else "national"
    if value.startswith(("00", "(00")):
        base = "intl_00"
    if re.search(r"x|durchwahl", value, re.IGNORECASE):  # x1234, ext. 12, ;ext=12, Durchwahl 12
        base += "_ext"
    return base


_EXTENSIONS = (" ext. {n}", " x{n}", ";ext={n}", " ext {n}", " (ext. {n})", " Durchwahl {n}")


def phone_items(fakers: dict[str, Faker], rng: random.Random, per_locale: int) -> Iterator[Item]:
    """Faker's own phone numbers per locale, plus +CC, 00CC and extension forms derived from them."""
    contexts = (
        "Call me back at {v} after 5pm.",
        "My phone number is {v}",
        "Reach the warehouse on {v}, ask for Marta.",
        "Tel.: {v}",
        "If the delivery fails, the driver should ring {v}.",
        "Update my mobile to {v} please.",
    )
    for loc, cc, trunk in PHONE_LOCALES:
        fake = fakers[loc]
        for i in range(per_locale):
            raw = fake.phone_number()
            fmt = _phone_format(raw)
            if i % 4 == 1 and fmt.startswith("national"):
                raw = _international(re.split(r"x|ext", raw)[0], cc, trunk, rng)
            elif i % 4 == 2 and raw.startswith("+"):
                raw = "00" + raw[1:]
            elif i % 4 == 3 and "_ext" not in fmt:
                raw += rng.choice(_EXTENSIONS).format(n=rng.randint(2, 9999))
            fmt = _phone_format(raw)
            yield Item(
                "faker",
                f"phone/{fmt}",
                loc,
                rng.choice(contexts).format(v=raw),
                {"phone": 1},
                value=raw,
                phone_format=fmt,
            )


def email_items(fakers: dict[str, Faker], rng: random.Random, n: int) -> Iterator[Item]:
    contexts = (
        "Send the invoice to {v} by Friday.",
        "Reply-To: {v}",
        "Her address is <{v}>, cc me.",
        "[mail me](mailto:{v})",
        "Please create an account for {v} with read access.",
    )
    locs = tuple(fakers)
    for i in range(n):
        loc = locs[i % len(locs)]
        fake = fakers[loc]
        style = i % 4
        if style == 0:
            v = fake.email()
        elif style == 1:
            v = fake.company_email()
        elif style == 2:
            v = fake.free_email()
        else:
            user = fake.user_name()
            v = f"{user}+{rng.choice(('billing', 'test', 'news'))}@mail.{fake.domain_name()}"
        yield Item("faker", "email", loc, rng.choice(contexts).format(v=v), {"email": 1}, value=v)


def ssn_items(fake: Faker, rng: random.Random, n: int) -> Iterator[Item]:
    for i in range(n):
        v = fake.ssn()
        style = ("dashed", "spaced", "bare")[i % 3]
        if style == "spaced":
            v = v.replace("-", " ")
            text = rng.choice(("My social security number is {v}.", "SSN {v}", "ssn: {v}"))
        elif style == "bare":
            v = v.replace("-", "")
            text = rng.choice(("SSN: {v}", "Social Security No. {v}", "my ssn is {v}"))
        else:
            text = rng.choice(("Applicant SSN {v}, DOB on file.", "His social is {v}", "SSN={v}"))
        yield Item("faker", f"ssn/{style}", "en_US", text.format(v=v), {"ssn": 1}, value=v)


# How each length is printed on the card: Amex/JCB15 4-6-5, Diners 4-6-4, 13-digit Visa 4-3-3-3.
_CARD_LAYOUT = {
    12: (4, 4, 4),
    13: (4, 3, 3, 3),
    14: (4, 6, 4),
    15: (4, 6, 5),
    16: (4, 4, 4, 4),
    19: (4, 4, 4, 4, 3),
}


def _card_groups(number: str, sep: str) -> str:
    parts, i = [], 0
    for n in _CARD_LAYOUT[len(number)]:
        parts.append(number[i : i + n])
        i += n
    return sep.join(parts)


def card_items(fake: Faker, rng: random.Random, per_brand: int) -> Iterator[Item]:
    contexts = (
        "Charge it to my card {v}, expiry 09/28.",
        "card number: {v}",
        "I was billed twice on {v} — can you refund one?",
        "Use the corporate card {v} for the hotel.",
    )
    for brand in CARD_BRANDS:
        for i in range(per_brand):
            number = fake.credit_card_number(card_type=brand)
            assert _luhn_ok(number), number  # the label is only as good as the generator
            style = ("bare", "spaced", "dashed")[i % 3]
            v = (
                number
                if style == "bare"
                else _card_groups(number, " " if style == "spaced" else "-")
            )
            yield Item(
                "faker",
                f"credit_card/{brand}/{style}",
                "en_US",
                rng.choice(contexts).format(v=v),
                {"credit_card": 1},
                value=v,
            )


def ip_items(fake: Faker, rng: random.Random, n: int) -> Iterator[Item]:
    v4_contexts = (
        "The server at {v} refuses SSH since this morning.",
        "Block traffic from {v} in the firewall.",
        "curl http://{v}:8080/health returns 502",
        "client_ip={v} user_agent=Mozilla/5.0",
    )
    v6_contexts = (
        "Our AAAA record points at {v}.",
        "ping6 {v} times out",
        "Allow {v} in the security group.",
        "remote_addr: {v}",
    )
    for i in range(n):
        v = fake.ipv4_public() if i % 2 else fake.ipv4_private()
        kind = "public" if i % 2 else "private"
        yield Item(
            "faker",
            f"ipv4/{kind}",
            "en_US",
            rng.choice(v4_contexts).format(v=v),
            {"ipv4": 1},
            value=v,
        )
    for i in range(n):
        addr = ipaddress.IPv6Address(fake.ipv6())
        style = ("compressed", "exploded", "mapped")[i % 3]
        if style == "compressed":
            v = addr.compressed
        elif style == "exploded":
            v = addr.exploded
        else:
            v = f"::ffff:{fake.ipv4_public()}"
        yield Item(
            "faker",
            f"ipv6/{style}",
            "en_US",
            rng.choice(v6_contexts).format(v=v),
            {"ipv6": 1},
            value=v,
        )


def _iban_ok(iban: str) -> bool:
    s = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(number)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_items(fakers: dict[str, Faker], rng: random.Random, per_locale: int) -> Iterator[Item]:
    contexts = (
        "Please wire the deposit to {v}.",
        "IBAN: {v}",
        "My new account is {v}, update the payroll.",
        "Refund to {v} (BIC on file).",
    )
    for loc in IBAN_LOCALES:
        fake = fakers[loc]
        for i in range(per_locale):
            iban = fake.iban()
            assert _iban_ok(iban), iban
            style = "grouped" if i % 2 else "compact"
            v = " ".join(iban[j : j + 4] for j in range(0, len(iban), 4)) if i % 2 else iban
            yield Item(
                "faker",
                f"iban/{iban[:2]}/{style}",
                loc,
                rng.choice(contexts).format(v=v),
                {"iban": 1},
                value=v,
            )


# --- presidio-evaluator templates ----------------------------------------------------------------

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


# --- secrets -------------------------------------------------------------------------------------


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b62_crc(body: str) -> str:
    n = binascii.crc32(body.encode())
    out = ""
    while n:
        n, d = divmod(n, 62)
        out = BASE62[d] + out
    return out.rjust(6, "0")


def _checksummed(prefix: str, rng: random.Random) -> str:
    """GitHub's and npm's 2021 format: prefix, 30 base62 chars, base62 CRC32 of them in 6."""
    body = _r(rng, ALNUM, 30)
    return prefix + body + _b62_crc(body)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(rng: random.Random) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "sub": str(rng.randint(10**5, 10**9)),
        "iat": rng.randint(1_600_000_000, 1_800_000_000),
        "role": "admin",
    }
    return f"{header}.{_b64url(json.dumps(claims).encode())}.{_b64url(rng.randbytes(32))}"


def _pem(rng: random.Random, label: str) -> str:
    body = base64.b64encode(rng.randbytes(rng.choice((400, 600, 900)))).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----"


# vendor -> (group, variable name, token maker). Formats from each vendor's documentation.
Maker = Callable[[random.Random], str]
VENDORS: dict[str, tuple[str, str, Maker]] = {
    "github_classic": (
        "listed",
        "GITHUB_TOKEN",
        lambda r: _checksummed(r.choice(("ghp_", "gho_", "ghu_", "ghs_", "ghr_")), r),
    ),
    "github_fine_grained": (
        "listed",
        "GH_TOKEN",
        lambda r: (
            "github_pat_11"
            + _r(r, string.ascii_uppercase + string.digits, 20)
            + "_"
            + _r(r, ALNUM, 59)
        ),
    ),
    "gitlab": (
        "listed",
        "GITLAB_TOKEN",
        lambda r: r.choice(("glpat-", "glptt-", "gldt-")) + _r(r, URLSAFE, 20),
    ),
    "npm": ("listed", "NPM_TOKEN", lambda r: _checksummed("npm_", r)),
    "huggingface": ("listed", "HF_TOKEN", lambda r: "hf_" + _r(r, string.ascii_letters, 34)),
    "sendgrid": (
        "listed",
        "SENDGRID_API_KEY",
        lambda r: "SG." + _r(r, URLSAFE, 22) + "." + _r(r, URLSAFE, 43),
    ),
    "slack_bot": (
        "listed",
        "SLACK_BOT_TOKEN",
        lambda r: f"xoxb-{r.randint(10**9, 10**12)}-{r.randint(10**9, 10**12)}-{_r(r, ALNUM, 24)}",
    ),
    "slack_user": (
        "listed",
        "SLACK_TOKEN",
        lambda r: (
            f"xoxp-{r.randint(10**9, 10**12)}-{r.randint(10**9, 10**12)}-{r.randint(10**9, 10**12)}-{_r(r, HEX, 32)}"
        ),
    ),
    "slack_app": (
        "listed",
        "SLACK_APP_TOKEN",
        lambda r: (
            f"xapp-1-A{_r(r, string.ascii_uppercase + string.digits, 10)}-{r.randint(10**12, 10**13 - 1)}-{_r(r, HEX, 64)}"
        ),
    ),
    "slack_webhook": (
        "listed",
        "SLACK_WEBHOOK_URL",
        lambda r: (
            f"https://hooks.slack.com/services/T{_r(r, string.ascii_uppercase + string.digits, 8)}/B{_r(r, string.ascii_uppercase + string.digits, 10)}/{_r(r, ALNUM, 24)}"
        ),
    ),
    "stripe": (
        "listed",
        "STRIPE_SECRET_KEY",
        lambda r: r.choice(("sk_live_", "sk_test_", "rk_live_")) + _r(r, ALNUM, r.choice((24, 99))),
    ),
    "google_api": ("listed", "GOOGLE_API_KEY", lambda r: "AIza" + _r(r, URLSAFE, 35)),
    "aws_access_key_id": (
        "listed",
        "AWS_ACCESS_KEY_ID",
        lambda r: r.choice(("AKIA", "ASIA")) + _r(r, string.ascii_uppercase + "234567", 16),
    ),
    "aws_secret_key": ("listed", "AWS_SECRET_ACCESS_KEY", lambda r: _r(r, ALNUM + "/+", 40)),
    "openai": (
        "listed",
        "OPENAI_API_KEY",
        lambda r: r.choice(
            (
                "sk-proj-" + _r(r, URLSAFE, 74) + "T3BlbkFJ" + _r(r, URLSAFE, 74),
                "sk-svcacct-" + _r(r, URLSAFE, 74) + "T3BlbkFJ" + _r(r, URLSAFE, 74),
                "sk-" + _r(r, ALNUM, 20) + "T3BlbkFJ" + _r(r, ALNUM, 20),
            )
        ),
    ),
    "anthropic": (
        "listed",
        "ANTHROPIC_API_KEY",
        lambda r: r.choice(("sk-ant-api03-", "sk-ant-admin01-")) + _r(r, URLSAFE, 93) + "AA",
    ),
    "twilio": ("other", "TWILIO_API_KEY", lambda r: "SK" + _r(r, HEX, 32)),
    "mailgun": ("other", "MAILGUN_API_KEY", lambda r: "key-" + _r(r, HEX, 32)),
    "mailchimp": (
        "other",
        "MAILCHIMP_API_KEY",
        lambda r: _r(r, HEX, 32) + f"-us{r.randint(1, 21)}",
    ),
    "shopify": (
        "other",
        "SHOPIFY_ACCESS_TOKEN",
        lambda r: r.choice(("shpat_", "shpss_", "shpca_", "shppa_")) + _r(r, HEX, 32),
    ),
    "digitalocean": (
        "other",
        "DIGITALOCEAN_TOKEN",
        lambda r: r.choice(("dop_v1_", "doo_v1_", "dor_v1_")) + _r(r, HEX, 64),
    ),
    "databricks": ("other", "DATABRICKS_TOKEN", lambda r: "dapi" + _r(r, HEX, 32)),
    "pypi": (
        "other",
        "TWINE_PASSWORD",
        lambda r: "pypi-AgEIcHlwaS5vcmc" + _r(r, URLSAFE, r.randint(60, 120)),
    ),
    "discord_webhook": (
        "other",
        "DISCORD_WEBHOOK",
        lambda r: (
            f"https://discord.com/api/webhooks/{r.randint(10**17, 10**19 - 1)}/{_r(r, URLSAFE, 68)}"
        ),
    ),
    "telegram_bot": (
        "other",
        "TELEGRAM_BOT_TOKEN",
        lambda r: f"{r.randint(10**8, 10**10 - 1)}:AA{_r(r, URLSAFE, 33)}",
    ),
    "postman": ("other", "POSTMAN_API_KEY", lambda r: f"PMAK-{_r(r, HEX, 24)}-{_r(r, HEX, 34)}"),
    "linear": ("other", "LINEAR_API_KEY", lambda r: "lin_api_" + _r(r, ALNUM, 40)),
    "doppler": ("other", "DOPPLER_TOKEN", lambda r: "dp.pt." + _r(r, ALNUM, 43)),
    "grafana": (
        "other",
        "GRAFANA_TOKEN",
        lambda r: "glsa_" + _r(r, ALNUM, 32) + "_" + _r(r, HEX, 8),
    ),
    "new_relic": (
        "other",
        "NEW_RELIC_API_KEY",
        lambda r: "NRAK-" + _r(r, string.ascii_uppercase + string.digits, 27),
    ),
    "square": ("other", "SQUARE_ACCESS_TOKEN", lambda r: "EAAA" + _r(r, URLSAFE, 60)),
    "atlassian": (
        "other",
        "JIRA_API_TOKEN",
        lambda r: "ATATT3xFfGF0" + _r(r, URLSAFE, 171) + "=" + _r(r, "0123456789ABCDEF", 8),
    ),
    "azure_storage": (
        "other",
        "AZURE_STORAGE_CONNECTION_STRING",
        lambda r: (
            "DefaultEndpointsProtocol=https;AccountName=acme"
            + _r(r, string.ascii_lowercase, 6)
            + ";AccountKey="
            + base64.b64encode(r.randbytes(64)).decode()
            + ";EndpointSuffix=core.windows.net"
        ),
    ),
    "private_key": (
        "other",
        "SSH_PRIVATE_KEY",
        lambda r: _pem(
            r, r.choice(("RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY"))
        ),
    ),
    "jwt": ("other", "ACCESS_TOKEN", _jwt),
    "groq": ("other", "GROQ_API_KEY", lambda r: "gsk_" + _r(r, ALNUM, 52)),
    "replicate": ("other", "REPLICATE_API_TOKEN", lambda r: "r8_" + _r(r, ALNUM, 37)),
    "dockerhub": ("other", "DOCKERHUB_TOKEN", lambda r: "dckr_pat_" + _r(r, URLSAFE, 27)),
    "age": (
        "other",
        "SOPS_AGE_KEY",
        lambda r: "AGE-SECRET-KEY-1" + _r(r, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58),
    ),
}
_NEEDS_VARIABLE = {"aws_secret_key"}  # a bare 40-char string is only a secret beside its name

_SECRET_CONTEXTS = (
    "export {var}={v}",
    "DEBUG=false\nPORT=8080\n{var}={v}\nLOG_LEVEL=info",
    '{var}: "{v}"',
    "Why does this return 401? curl -H 'Authorization: Bearer {v}' https://api.example.com/v1/me",
    'client = Client(api_key="{v}", timeout=30)',
    "here is my token {v} can you check what scopes it has",
    'os.environ["{var}"] = "{v}"',
)


def secret_items(rng: random.Random, per_vendor: int) -> Iterator[Item]:
    for vendor, (group, var, make) in VENDORS.items():
        for i in range(per_vendor):
            token = make(rng)
            if vendor in _NEEDS_VARIABLE:
                context = rng.choice([c for c in _SECRET_CONTEXTS if "{var}" in c])
            else:
                context = _SECRET_CONTEXTS[i % len(_SECRET_CONTEXTS)]
            labels = {"secret": 1}
            text = context.format(var=var, v=token)
            if (
                vendor == "aws_access_key_id" and i % 3 == 0
            ):  # the pair, as ~/.aws/credentials has it
                secret = VENDORS["aws_secret_key"][2](rng)
                text = f"[default]\naws_access_key_id = {token}\naws_secret_access_key = {secret}"
                labels = {"secret": 2}
            yield Item(
                "secret",
                f"secret/{vendor}",
                "",
                text,
                labels,
                value=token,
                vendor=vendor,
                vendor_group=group,
            )


# --- hard negatives ------------------------------------------------------------------------------


def _ean13(rng: random.Random, prefix: str) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(12 - len(prefix)))
    check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body)) % 10) % 10
    return body + str(check)


def _isbn13(rng: random.Random) -> str:
    digits = _ean13(rng, rng.choice(("978", "979")))
    return f"{digits[:3]}-{digits[3]}-{digits[4:7]}-{digits[7:12]}-{digits[12]}"


def _isbn10(rng: random.Random) -> str:
    body = [rng.randint(0, 9) for _ in range(9)]
    check = (11 - sum((10 - i) * d for i, d in enumerate(body)) % 11) % 11
    tail = "X" if check == 10 else str(check)
    s = "".join(map(str, body))
    return f"{s[0]}-{s[1:4]}-{s[4:9]}-{tail}"


def _negatives(rng: random.Random, fake: Faker) -> dict[str, Callable[[], str]]:
    def d(a: int, b: int) -> int:
        return rng.randint(a, b)

    return {
        "version": lambda: rng.choice(
            (
                f'__version__ = "{d(0, 9)}.{d(0, 20)}.{d(0, 30)}.{d(0, 9)}"',
                f"pip install requests=={d(1, 3)}.{d(0, 32)}.{d(0, 9)}",
                f'"version": "{d(1, 12)}.{d(0, 9)}.{d(0, 99)}.{d(0, 9999)}",',
                f"User-Agent: Mozilla/5.0 Chrome/{d(100, 130)}.0.{d(4000, 6999)}.{d(10, 250)} Safari/537.36",
                f"Windows 10.0.{d(17000, 22631)}.{d(100, 4000)} keeps crashing on boot",
                f'<PackageReference Include="Newtonsoft.Json" Version="{d(9, 13)}.0.{d(1, 3)}.{d(1, 9)}" />',
                f"upgrade from v{d(1, 4)}.{d(0, 9)}.{d(0, 9)} to v{d(1, 4)}.{d(0, 9)}.{d(10, 40)}",
            )
        ),
        "oid": lambda: rng.choice(
            (
                f"OID 1.3.6.1.4.1.{d(1, 60000)}.{d(1, 20)}.{d(1, 9)}",
                f"snmpget -v2c -c public host 1.3.6.1.2.1.{d(1, 30)}.{d(1, 9)}.{d(0, 9)}.{d(0, 9)}",
                "signatureAlgorithm: 1.2.840.113549.1.1.11 (sha256WithRSAEncryption)",
                f"attribute 2.5.4.{d(3, 45)} = commonName",
                f"policy OID 2.16.840.1.{d(100000, 114000)}.{d(1, 9)}.{d(1, 99)}",
            )
        ),
        "ean13": lambda: (
            "| sku | ean | qty |\n|---|---|---|\n"
            + "\n".join(
                f"| {fake.bothify('??-###').upper()} | {_ean13(rng, rng.choice(('400', '401', '590', '871', '501', '300', '489')))} | {d(1, 40)} |"
                for _ in range(d(2, 4))
            )
        ),
        "placeholder_key": lambda: rng.choice(
            (
                "AWS_ACCESS_KEY_ID=AKIAXXXXXXXXXXXXXXXX",
                "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
                "GITHUB_TOKEN=ghp_" + "x" * 36,
                "export OPENAI_API_KEY=sk-...your-key-here",
                "OPENAI_API_KEY=sk-proj-XXXXXXXXXXXXXXXXXXXXXXXX",
                "ANTHROPIC_API_KEY=<your-anthropic-key>",
                "SLACK_BOT_TOKEN=xoxb-your-bot-token",
                'api_key: "${API_KEY}"',
                "Authorization: Bearer <token>",
                "STRIPE_SECRET_KEY=sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
                "HF_TOKEN=hf_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "password: changeme",
            )
        ),
        "clone_url": lambda: rng.choice(
            (
                f"git clone git@github.com:{fake.user_name()}/{fake.word()}-{fake.word()}.git",
                f"git remote add origin git@gitlab.com:{fake.user_name()}/{fake.word()}.git",
                f"ssh://git@bitbucket.org/{fake.user_name()}/{fake.word()}.git",
                f"pip install git+ssh://git@github.com/{fake.user_name()}/{fake.word()}.git@v{d(1, 3)}.{d(0, 9)}.{d(0, 9)}",
            )
        ),
        "uuid": lambda: rng.choice(
            (
                f"request_id={uuid.UUID(int=rng.getrandbits(128), version=4)}",
                f"GET /api/v2/orders/{uuid.UUID(int=rng.getrandbits(128), version=4)} 404",
                f"trace {uuid.UUID(int=rng.getrandbits(128), version=1)} span {_r(rng, HEX, 16)}",
            )
        ),
        "timestamp": lambda: rng.choice(
            (
                f"2024-{d(1, 12):02d}-{d(1, 28):02d}T{d(0, 23):02d}:{d(0, 59):02d}:{d(0, 59):02d}.{d(0, 999999):06d}Z ERROR worker timeout",
                f"created_at: {d(1_500_000_000, 1_800_000_000)}",
                f"ts_ms={d(1_500_000_000_000, 1_800_000_000_000)}",
                f"backup_20{d(10, 30)}{d(1, 12):02d}{d(1, 28):02d}{d(0, 23):02d}{d(0, 59):02d}{d(0, 59):02d}.tar.gz",
                f"[{d(10, 23)}:{d(10, 59)}:{d(10, 59)}.{d(100, 999)}] GET /health 200",
            )
        ),
        "order_number": lambda: rng.choice(
            (
                f"Order #{d(10**9, 10**10 - 1)} shipped today.",
                f"Invoice INV-20{d(20, 26)}-{d(0, 999999):06d} is overdue.",
                f"PO {d(4500000000, 4599999999)} was approved.",
                f"Ticket {fake.bothify('??-#####').upper()} reopened.",
                f"tracking number 1Z{_r(rng, string.ascii_uppercase + string.digits, 16)}",
                f"customer id {d(10**11, 10**12 - 1)}",
            )
        ),
        "hex_hash": lambda: rng.choice(
            (
                f"commit {_r(rng, HEX, 40)}",
                f"sha256: {hashlib.sha256(rng.randbytes(16)).hexdigest()}",
                f"md5sum {hashlib.md5(rng.randbytes(16)).hexdigest()}  release.tar.gz",
                f"image: ghcr.io/acme/api@sha256:{hashlib.sha256(rng.randbytes(8)).hexdigest()}",
                f'etag: "{_r(rng, HEX, 32)}"',
                f"Merge {_r(rng, HEX, 7)}..{_r(rng, HEX, 7)} into main",
            )
        ),
        "isbn": lambda: rng.choice(
            (
                f"ISBN {_isbn13(rng)}",
                f"ISBN-10: {_isbn10(rng)}",
                f"isbn={_isbn13(rng).replace('-', '')}",
            )
        ),
        "zip_code": lambda: rng.choice(
            (
                f"{fake.city()}, CA {d(90001, 96162)}",
                f"ZIP {d(10000, 99999)}-{d(1000, 9999)}",
                f"{d(75001, 75020)} Paris",
                f"{d(10115, 14199)} Berlin",
                "London SW1A 1AA",
            )
        ),
        "price": lambda: rng.choice(
            (
                f"Total: ${d(1, 999)},{d(100, 999)}.{d(0, 99):02d}",
                f"Preis: {d(1, 999)}.{d(100, 999)}.{d(100, 999)},{d(0, 99):02d} €",
                f"¥{d(1, 999)},{d(100, 999)},{d(100, 999)}",
                f"revenue grew to 1,{d(100, 999)},{d(100, 999)},{d(100, 999)} USD",
            )
        ),
        "cpp_scope": lambda: rng.choice(
            (
                "std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count()",
                "error: no member named 'Foo' in namespace 'app::net::http'",
                "impl Default for crate::config::Settings { fn default() -> Self { todo!() } }",
                f"at Acme::Billing::Invoice.render() line {d(10, 900)}",
            )
        ),
        "mac_address": lambda: (
            f"ether {':'.join(_r(rng, HEX, 2) for _ in range(6))} brd ff:ff:ff:ff:ff:ff"
        ),
        "coordinates": lambda: f"lat/lon {rng.uniform(-80, 80):.6f}, {rng.uniform(-170, 170):.6f}",
        "measurement": lambda: rng.choice(
            (
                f"file size {d(10**9, 10**10)} bytes",
                f"population {d(10**6, 10**9)}",
                f"latency p99 {d(100, 999)}.{d(0, 9)} ms over {d(10**6, 10**8)} requests",
                f"Read {d(10**8, 10**10)} rows in {d(1, 99)}.{d(0, 99)} s",
            )
        ),
    }


NEGATIVE_CATEGORIES = (
    "version",
    "oid",
    "ean13",
    "placeholder_key",
    "clone_url",
    "uuid",
    "timestamp",
    "order_number",
    "hex_hash",
    "isbn",
    "zip_code",
    "price",
    "cpp_scope",
    "mac_address",
    "coordinates",
    "measurement",
)


def negative_items(fake: Faker, rng: random.Random, per_category: int) -> Iterator[Item]:
    makers = _negatives(rng, fake)
    assert tuple(makers) == NEGATIVE_CATEGORIES
    intros = ("", "Can you explain this line? ", "Summarise the log:\n", "Fix the config:\n")
    for category, make in makers.items():
        for i in range(per_category):
            value = make()
            yield Item(
                "negative",
                f"neg/{category}",
                "en_US",
                intros[i % len(intros)] + value,
                {},
                value=value,
            )


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


# --- carriers ------------------------------------------------------------------------------------

SYSTEM = "You are a careful support assistant. Answer briefly."


_FIELD_NAMES = {
    "email": "Email",
    "phone": "Phone",
    "ssn": "SSN",
    "credit_card": "Card number",
    "ipv4": "IP address",
    "ipv6": "IP address",
    "iban": "IBAN",
}


def _after_escape(item: Item, rng: random.Random) -> str:
    """The value right after a newline or a tab, as tool arguments carry form fields.

    The field name stays in front (``SSN:`` or ``AWS_SECRET_ACCESS_KEY:``, then the escape, then
    the value): a bare nine-digit number or 40-character string is no SSN or key to a reader.
    """
    if (
        item.source in ("faker", "secret")
        and sum(item.labels.values()) == 1
        and rng.random() < 0.67
    ):
        (kind,) = item.labels
        name = VENDORS[item.vendor][1] if item.vendor else _FIELD_NAMES[kind]
        return f"{name}:{rng.choice(('\n', '\t', '\n\n'))}{item.value}"
    return item.text


def carry(item: Item, shape: str, rng: random.Random, n: int) -> str:
    """``item`` wrapped as the body of a request of ``shape`` (exact bytes, as a str)."""
    if shape == "text":
        return item.text
    call_id = f"call_{_r(rng, ALNUM, 24)}"
    if shape.startswith("openai"):
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
        if shape == "openai_user":
            messages.append({"role": "user", "content": item.text})
        elif shape == "openai_parts":
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Here is the customer's message:"},
                        {"type": "text", "text": item.text},
                    ],
                }
            )
        else:
            args = {"ticket_id": n, "body": _after_escape(item, rng), "priority": "normal"}
            messages.append({"role": "user", "content": "File this as a ticket."})
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {
                                "name": "create_ticket",
                                "arguments": json.dumps(args)
                                if shape == "openai_tool_args"
                                else f'{{"ticket_id": {n}}}',
                            },
                        }
                    ],
                }
            )
            if shape == "openai_tool_args":
                result = "created"
            elif rng.random() < 0.5:  # tool results are often JSON text themselves
                result = json.dumps(
                    {"ticket_id": n, "status": "open", "body": _after_escape(item, rng)}
                )
            else:
                result = item.text
            messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        return json.dumps(
            {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.2}, ensure_ascii=False
        )
    if shape.startswith("anthropic"):
        tool_id = f"toolu_{_r(rng, ALNUM, 24)}"
        amessages: list[dict[str, Any]] = []
        if shape == "anthropic_user":
            content: Any = (
                item.text if rng.random() < 0.5 else [{"type": "text", "text": item.text}]
            )
            amessages.append({"role": "user", "content": content})
        else:
            use_input: dict[str, Any] = {"ticket_id": n}
            if shape == "anthropic_tool_use":
                use_input = {"ticket_id": n, "body": _after_escape(item, rng)}
            amessages.append({"role": "user", "content": "File this as a ticket."})
            amessages.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Filing it now."},
                        {
                            "type": "tool_use",
                            "id": tool_id,
                            "name": "create_ticket",
                            "input": use_input,
                        },
                    ],
                }
            )
            if shape == "anthropic_tool_use":
                result_content: Any = "created"
            elif rng.random() < 0.5:
                result_content = item.text
            else:
                result_content = [{"type": "text", "text": _after_escape(item, rng)}]
            amessages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": tool_id, "content": result_content},
                    ],
                }
            )
        return json.dumps(
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": SYSTEM,
                "messages": amessages,
            },
            ensure_ascii=False,
        )
    assert shape == "mcp_tools_call"
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": n,
            "method": "tools/call",
            "params": {
                "name": "crm_update_contact",
                "arguments": {
                    "contact_id": n,
                    "note": _after_escape(item, rng),
                    "tags": ["support"],
                },
            },
        },
        ensure_ascii=False,
    )


# --- the corpus ----------------------------------------------------------------------------------

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
