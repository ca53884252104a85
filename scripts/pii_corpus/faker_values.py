"""Faker's values, one labelled snippet each: phones, e-mails, SSNs, cards, IPs, IBANs."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterator

from faker import Faker

from .locales import IBAN_LOCALES, PHONE_LOCALES
from .records import Item

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
