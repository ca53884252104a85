"""Hard negatives: strings that look like PII and are not, by category."""

from __future__ import annotations

import hashlib
import random
import string
import uuid
from collections.abc import Callable, Iterator

from faker import Faker

from .alphabets import HEX, _r
from .records import Item


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
