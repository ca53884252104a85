"""Secrets of 39 vendors: random tokens in each vendor's published format, in leak contexts."""

from __future__ import annotations

import base64
import binascii
import json
import random
import string
from collections.abc import Callable, Iterator

from .alphabets import ALNUM, BASE62, HEX, URLSAFE, _r
from .records import Item


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
