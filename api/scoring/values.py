"""Value-level facts: what an action's argument values hold, not only what their keys are called.

One bounded walk over the parameters (any nesting, lists, JSON text inside strings) finds:

- **PII and secrets** with the proxy's own scanner (``addon.pii.scan_json``): types and counts
  only, never a value. Values that are the call's destination (an address in ``to``) are not
  payload and do not count as PII sent.
- **Payload field classes**: keys inside the payload (``card_number`` in a JSON body) classified
  with the same field table as ``data_fields_accessed``.
- **Destinations**: email addresses, URLs with or without a scheme, IBANs, phone numbers,
  account numbers, chat handles (``@user``) and channels (``#ops``), file shares, found under
  keys that name where something goes (``to``, ``recipients``, ``url``, ``channel`` …) or as
  values that are nothing but an address. Each is internal (an internal domain, a private host,
  a workspace handle) or external; an external one the agent already dealt with is *known*.
- **Amounts** and their currency, **paths** (sensitive or system locations), **shell commands**
  (the command words), and the **deletion scope** (single, bulk, all, recursive).

Every finding is an :class:`ArgValue` with its JSON path and kind: later stages (provenance from
the conversation, data flow by content) attach to the same values by path. Destinations carry a
salted digest of their normalised form so the proxy can remember counterparties without keeping
them.

Why one module of ~500 lines: the walk (``_Walk``) is one pass whose branches share the key
context of each leaf (a key names a destination, an amount, a path or a command); split across
modules the walk would hand that context back and forth per leaf. The word lists and patterns it
reads sit at the top, grouped by the fact they feed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import msgspec

from api.scoring.fields import words

if TYPE_CHECKING:
    from types import ModuleType

# Key words that say a value is where the call sends something (checked on the key's words).
_DEST_WORDS: Final = frozenset(
    {"to", "recipient", "recipients", "cc", "bcc", "email", "emails", "destination", "dest"}
    | {"url", "uri", "link", "endpoint", "webhook", "website", "site", "domain", "host"}
    | {"channel", "channels", "phone", "mobile", "sms", "iban", "payee", "beneficiary", "contact"}
    | {"address", "addresses", "target", "share", "invitee", "invitees", "attendee", "attendees"}
    | {"user", "username", "handle", "account", "receiver", "member", "members", "bucket"}
    | {"participant", "participants", "guest", "guests"}
)
# Kinds checked only under keys that can hold them ("user_id" is no phone or account number).
_PHONE_WORDS: Final = frozenset(
    {"phone", "mobile", "sms", "to", "recipient", "recipients", "number", "contact", "receiver"}
)
_ACCOUNT_WORDS: Final = frozenset(
    {"account", "payee", "beneficiary", "iban", "to", "recipient", "receiver", "destination"}
)
# A bare "name.ext" that is a file, not a host.
_FILE_EXTENSIONS: Final = frozenset(
    [
        "pdf",
        "py",
        "js",
        "ts",
        "txt",
        "csv",
        "json",
        "yaml",
        "yml",
        "md",
        "png",
        "jpg",
        "jpeg",
        "gif",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "zip",
        "tar",
        "gz",
        "log",
        "xml",
        "exe",
        "sh",
        "mp3",
        "mp4",
        "wav",
        "mov",
        "html",
        "htm",
        "toml",
        "ini",
        "cfg",
        "sql",
        "rb",
        "go",
        "rs",
        "java",
    ]
)
# …unless the key names a source: "from_account", "sender", "source_url".
_SOURCE_WORDS: Final = frozenset({"from", "source", "src", "sender", "origin", "my", "own"})
_MONEY_WORDS: Final = frozenset(
    {"amount", "total", "price", "sum", "cost", "fee", "payment", "subtotal"}
)
_CURRENCY_KEYS: Final = frozenset({"currency", "currency_code", "ccy", "coin", "asset"})
_PATH_WORDS: Final = frozenset({"path", "paths", "file", "files", "folder", "directory", "dir"})
_COMMAND_KEYS: Final = frozenset({"command", "cmd", "commands", "script", "shell", "bash"})
_ARG_VERB_KEYS: Final = frozenset({"action", "operation", "op", "method", "mode", "verb", "type"})

_EMAIL_RE: Final = re.compile(r"[\w.+'-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24})")
_URL_RE: Final = re.compile(
    r"(?:\b(?:https?|ftp|wss?)://|\bwww\.)([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)", re.IGNORECASE
)
# A scheme-less address as a whole value ("evil.example/x", "files.acme.io").
_BARE_HOST_RE: Final = re.compile(
    r"^([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.([A-Za-z]{2,24}))(?:[/:?#]\S*)?$"
)
_SHARE_RE: Final = re.compile(
    r"^(?:\\\\([\w.-]+)\\|(?:smb|nfs|afp|cifs)://([\w.-]+))", re.IGNORECASE
)
_HANDLE_RE: Final = re.compile(r"^@[\w.-]{1,64}$")
_CHANNEL_RE: Final = re.compile(r"^#[\w.-]{1,80}$")
_ACCOUNT_RE: Final = re.compile(r"^[A-Z]{0,4}[-\s]?\d[\d\s-]{5,30}\d$")
_IBAN_HINT_RE: Final = re.compile(r"[A-Z]{2}\d{2}")
_INTERNAL_HOST_RE: Final = re.compile(
    r"^(localhost|127\.\d+\.\d+\.\d+|10\.\d+\.\d+\.\d+|192\.168\.\d+\.\d+|172\.(1[6-9]|2\d|3[01])"
    r"\.\d+\.\d+)$|\.(internal|local|corp|lan|intranet|home\.arpa)$",
    re.IGNORECASE,
)
_AMOUNT_RE: Final = re.compile(
    r"^\s*(?P<pre>[$€£¥₹]|[A-Z]{3}\s)?\s*(?P<num>\d{1,3}(?:[,\s]\d{3})+|\d+)(?P<dec>\.\d+)?"
    r"\s*(?P<post>[A-Za-z]{3,4}|[$€£¥₹])?\s*$"
)
_SYMBOLS: Final = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR"}
_SENSITIVE_PATH_RE: Final = re.compile(
    r"(?i)(\.ssh\b|id_rsa|id_ed25519|\.aws/|\.kube/|\.gnupg|\.env\b|\.netrc|\.pgpass|/etc/(shadow|"
    r"passwd|sudoers)|credentials|secrets?\b|keychain|wallet|\.pem$|\.key$)"
)
_SYSTEM_PATH_RE: Final = re.compile(
    r"(?i)^(/etc|/usr|/bin|/sbin|/boot|/lib|/var/lib|/system|c:\\windows)(/|\\|$)"
)
_PATH_VALUE_RE: Final = re.compile(r"^(~|\.{0,2}/|[A-Za-z]:\\)[^\s]*$")
_CMD_SPLIT_RE: Final = re.compile(r"\|\||&&|[;|\n]|\$\(|`")
_CMD_PREFIX: Final = frozenset({"sudo", "env", "nohup", "time", "exec", "xargs", "doas"})
_DELETE_COMMANDS: Final = frozenset({"rm", "rmdir", "del", "shred", "unlink", "rd", "erase"})
_RECURSIVE_RE: Final = re.compile(r"(?:^|\s)(-[a-zA-Z]*[rR][a-zA-Z]*|--recursive|/s)\b")
_ALL_WORDS: Final = frozenset({"all", "everything", "entire", "*"})
_ALL_SCOPE_KEYS: Final = frozenset({"id", "ids", "target", "scope", "query", "filter", "path"})
_LIST_WORDS: Final = frozenset({"ids", "id", "items", "files", "paths", "records", "documents"})
_AMOUNT_START: Final = frozenset("0123456789$€£¥₹ABCDEFGHIJKLMNOPQRSTUVWXYZ")

_MAX_LEAVES = 400
_MAX_CHARS = 64 * 1024
_MAX_DEPTH = 8
_MAX_JSON = 16 * 1024  # JSON text inside a string decoded up to this size
_decode = msgspec.json.Decoder()

#: The kinds of destination a value can be (the ``destinations`` fact holds some of them).
DESTINATION_KINDS: Final = (
    "email",
    "url",
    "iban",
    "phone",
    "account",
    "handle",
    "channel",
    "share",
)
#: Scanner types that are sensitive on their own (cards, government ids, bank accounts).
SENSITIVE_PII: Final = frozenset({"credit_card", "ssn", "iban"})
# The data class of a scanner type. Contact details (email, phone, IP) have none: an address in
# a message is ordinary; they stay in `pii_types` for rules that want them.
_PII_CLASS: Final = {
    "ssn": "pii_sensitive",
    "credit_card": "financial",
    "iban": "financial",
    "secret": "auth",
}


@lru_cache(maxsize=1)
def _pii() -> ModuleType:
    """The proxy's scanner, imported on first use: ``addon.pii`` loads the proxy's settings
    module (and through it the budget store's database driver), which ``import api.scoring``
    must not pull in (the engine stays a pure module, tests/test_shared_contract.py)."""
    from addon import pii

    return pii


@lru_cache(maxsize=8192)
def _key_words(key: str) -> frozenset[str]:
    return frozenset(words(key))


class ArgValue(msgspec.Struct, frozen=True):
    """One value found in the arguments: where it is and what it is, never the value itself.

    ``path`` is the JSON path (``$.to``, ``$.body[0].card``); provenance and data-flow facts
    attach to values by it. ``digest`` is a salted hash of a destination's normalised form.
    """

    path: str
    kind: str
    external: bool | None = None
    known: bool = False
    digest: str = ""


def parse_domains(text: str) -> tuple[str, ...]:
    """``GOVRIX_INTERNAL_DOMAINS``: comma- or space-separated domains (``acme.com, acme.io``)."""
    out = []
    for raw in re.split(r"[\s,]+", text.strip().lower()):
        d = raw.lstrip("@*.").rstrip(".")
        if not d:
            continue
        if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", d):
            raise ValueError(f"not a domain: {raw!r}")
        out.append(d)
    return tuple(dict.fromkeys(out))


class _Walk:
    """State of one walk over an action's parameters."""

    def __init__(
        self,
        internal: tuple[str, ...],
        known: frozenset[str],
        salt: bytes,
        classify: Callable[[str], str | None],
    ) -> None:
        self.internal = internal
        self.known = known
        self.salt = salt
        self.classify = classify
        self.values: list[ArgValue] = []
        self.field_classes: set[str] = set()
        self.dest_paths: list[str] = []
        self.amounts: list[float] = []
        self.currency: str | None = None
        self.paths: list[str] = []
        self.commands: list[str] = []
        self.arg_verbs: list[str] = []
        self.bulk_ids = 0
        self.all_flag = False
        self.recursive = False
        self.external_links = 0
        self.leaves = 0
        self.chars = 0

    # --- classification of one destination ---------------------------------------------------

    def _internal_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if _INTERNAL_HOST_RE.search(host):
            return True
        return any(host == d or host.endswith("." + d) for d in self.internal)

    def _dest(self, path: str, kind: str, norm: str, external: bool) -> None:
        digest = hashlib.blake2b(
            f"{kind}:{norm}".encode(), key=self.salt, digest_size=8
        ).hexdigest()
        known = digest in self.known
        self.values.append(ArgValue(path, kind, external, known, digest))
        if path not in self.dest_paths:
            self.dest_paths.append(path)

    def _destinations(self, path: str, text: str, dest_key: bool, kws: frozenset[str]) -> None:
        """Destinations in one string: under a destination key, or a value that is only one."""
        s = text.strip()
        if not s or len(s) > 2048:
            return
        if _HANDLE_RE.match(s):
            if dest_key:
                self._dest(path, "handle", s.lower(), False)
            return
        if _CHANNEL_RE.match(s):
            if dest_key:
                self._dest(path, "channel", s.lower(), False)
            return
        m = _SHARE_RE.match(s)
        if m:
            host = m.group(1) or m.group(2)
            self._dest(path, "share", host.lower(), not self._internal_host(host))
            return
        emails = list(_EMAIL_RE.finditer(s))
        # An address list ("a@x.com, b@y.org") is a destination wherever it stands.
        only_emails = bool(emails) and not re.sub(r"[\s,;<>\"']+", "", _EMAIL_RE.sub("", s))
        if emails and (dest_key or only_emails):
            for e in emails:
                host = e.group(1)
                self._dest(path, "email", e.group(0).lower(), not self._internal_host(host))
            return
        urls = list(_URL_RE.finditer(s))
        bare = _BARE_HOST_RE.match(s) if not urls and " " not in s else None
        if urls and (dest_key or (len(urls) == 1 and urls[0].start() == 0 and " " not in s)):
            for u in urls:
                host = u.group(1)
                self._dest(path, "url", host.lower(), not self._internal_host(host))
            return
        if bare and dest_key and bare.group(2).lower() not in _FILE_EXTENSIONS:
            host = bare.group(1)
            self._dest(path, "url", host.lower(), not self._internal_host(host))
            return
        if not dest_key:
            return
        if len(s) > 64 or not any(c.isdigit() for c in s):
            return
        phone_ok = bool(kws & _PHONE_WORDS)
        if _IBAN_HINT_RE.search(re.sub(r"[\s-]", "", s)) or phone_ok:
            for match in _pii().scan_text(s):
                if match.type == "iban" or (match.type == "phone" and phone_ok):
                    norm = re.sub(r"[\s().-]", "", s[match.start : match.end]).upper()
                    self._dest(path, match.type, norm, True)
                    return
        if kws & _ACCOUNT_WORDS and _ACCOUNT_RE.match(s):
            self._dest(path, "account", re.sub(r"[\s-]", "", s).upper(), True)

    # --- the walk -----------------------------------------------------------------------------

    def walk(
        self, value: Any, path: str, key_words: frozenset[str], depth: int, payload: bool
    ) -> None:
        """Visit one node; `payload` is true inside JSON text held by a string (a message body
        or a document), where keys describe the data carried, not where the call goes."""
        if self.leaves >= _MAX_LEAVES or self.chars >= _MAX_CHARS or depth > _MAX_DEPTH:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                key = str(k)
                kw = _key_words(key)
                if kw and (payload or depth > 0 or not _DEST_WORDS & kw):
                    cls = self.classify(key)
                    if cls is not None and cls not in ("public", "internal"):
                        self.field_classes.add(cls)
                # Inside a payload no value is a destination: its path is not needed.
                child = path if payload else f"{path}.{key}" if key.isidentifier() else f"{path}[*]"
                self.walk(v, child, kw or key_words, depth + 1, payload)
            return
        if isinstance(value, list | tuple):
            if _LIST_WORDS & key_words:
                self.bulk_ids = max(self.bulk_ids, len(value))
            for i, v in enumerate(value):
                self.walk(v, path if payload else f"{path}[{i}]", key_words, depth + 1, payload)
            return
        self.leaves += 1
        if isinstance(value, bool):
            if value and _ALL_WORDS & key_words:
                self.all_flag = True
            if value and "recursive" in key_words:
                self.recursive = True
            return
        if isinstance(value, int | float):
            if not payload and _MONEY_WORDS & key_words:
                self.amounts.append(float(value))
            return
        if not isinstance(value, str) or not value:
            return
        self.chars += len(value)
        head = value.lstrip()[:1]
        if (head == "{" or head == "[") and len(value) <= _MAX_JSON:
            try:
                doc = _decode.decode(value)
            except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
                doc = None
            if isinstance(doc, dict | list):
                self.walk(doc, path, key_words, depth + 1, True)
                return
        self._leaf(path, value, key_words, payload)

    def _leaf(self, path: str, text: str, kws: frozenset[str], payload: bool) -> None:
        s = text.strip()
        short = len(s) <= 256
        if payload:
            # Data carried by the call: only its links matter here (PII is the scanner's).
            if "://" in text or "www." in text:
                self._links(text)
            return
        dest_key = bool(kws & _DEST_WORDS) and not (kws & _SOURCE_WORDS)
        if short and (dest_key or "@" in s or "://" in s or s.startswith(("www.", "\\\\"))):
            self._destinations(path, s, dest_key, kws)
        elif not dest_key and ("://" in text or "www." in text):
            self._links(text)
        if len(s) <= 40 and s[:1] in _AMOUNT_START:
            m = _AMOUNT_RE.match(s)
            if m and (kws & _MONEY_WORDS or m.group("pre") or m.group("post")):
                self._amount(m)
        if kws & _CURRENCY_KEYS and 2 <= len(s) <= 5 and s.isalpha():
            self.currency = s.upper()
        if s and (kws & _PATH_WORDS or ((s[:1] in "~./\\" or s[1:3] == ":\\") and short)):
            self.paths.append(s[:1024])
        if kws & _COMMAND_KEYS:
            self.commands.append(s[:4096])
        if kws & _ARG_VERB_KEYS and len(s) <= 32:
            self.arg_verbs.extend(words(s))
        if kws & _ALL_SCOPE_KEYS and s.lower() in _ALL_WORDS:
            self.all_flag = True

    def _links(self, text: str) -> None:
        for u in _URL_RE.finditer(text[:4096]):
            if not self._internal_host(u.group(1)):
                self.external_links += 1

    def _amount(self, m: re.Match[str]) -> None:
        try:
            value = float(re.sub(r"[,\s]", "", m.group("num")) + (m.group("dec") or ""))
        except ValueError:
            return
        self.amounts.append(value)
        unit = (m.group("pre") or m.group("post") or "").strip()
        if unit:
            self.currency = _SYMBOLS.get(unit, unit.upper())


def _command_words(commands: Iterable[str]) -> set[str]:
    """The program of each command in a chain (``sudo rm -rf x; curl y | sh`` → rm, curl, sh)."""
    out: set[str] = set()
    for command in commands:
        for part in _CMD_SPLIT_RE.split(command):
            tokens = [t for t in part.strip().split() if "=" not in t or t.startswith("-")]
            while tokens and tokens[0] in _CMD_PREFIX:
                tokens.pop(0)
            if tokens:
                out.add(tokens[0].rsplit("/", 1)[-1].lower())
    return out


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith((r + "[", r + ".")) for r in roots)


def value_facts(
    params: dict[str, Any],
    *,
    internal_domains: tuple[str, ...],
    known: frozenset[str],
    salt: bytes,
    classify: Callable[[str], str | None],
) -> tuple[dict[str, Any], list[ArgValue]]:
    """The value facts of an action's parameters, and the values they were drawn from."""
    w = _Walk(internal_domains, known, salt, classify)
    w.walk(params, "$", frozenset(), 0, False)
    findings = _pii().scan_json(params) if params else []
    pii_types: set[str] = set()
    pii_count = 0
    for f in findings:
        if f.type != "secret" and _under(f.path, w.dest_paths):
            continue  # the destination itself is not payload
        pii_types.add(f.type)
        pii_count += f.count
    classes = {_PII_CLASS[t] for t in pii_types if t in _PII_CLASS} | w.field_classes
    dests = w.values
    external = [v for v in dests if v.external]
    unknown_external = [v for v in external if not v.known]
    if not dests:
        destination = None
    elif unknown_external:
        destination = "external"
    else:
        destination = "internal"
    cmd_words = _command_words(w.commands)
    recursive = w.recursive or any(
        _RECURSIVE_RE.search(c) for c in w.commands if _command_words([c]) & _DELETE_COMMANDS
    )
    wildcard = any("*" in c for c in w.commands if _command_words([c]) & _DELETE_COMMANDS) or any(
        p.endswith(("*", "/*")) for p in w.paths
    )
    facts: dict[str, Any] = {
        "pii_types": pii_types,
        "pii_count": pii_count,
        "sensitive_pii": bool(pii_types & SENSITIVE_PII) or "pii_sensitive" in w.field_classes,
        "secret_in_args": "secret" in pii_types,
        "value_data_classes": classes,
        "destinations": {v.kind for v in dests},
        "destination": destination,
        "destination_count": len(dests),
        "external_destination_count": len(external),
        "external_destination_kinds": {v.kind for v in external},
        "known_destination": any(v.known for v in external),
        "external_links": w.external_links,
        "amount": max(w.amounts) if w.amounts else None,
        "currency": w.currency,
        "path_count": len(w.paths),
        "sensitive_path": any(_SENSITIVE_PATH_RE.search(p) for p in w.paths),
        "system_path": any(_SYSTEM_PATH_RE.match(p) for p in w.paths),
        "command_words": cmd_words,
        "deletes_by_command": bool(cmd_words & _DELETE_COMMANDS),
        "_recursive": recursive,
        "_all": w.all_flag or wildcard,
        "_bulk_ids": w.bulk_ids,
        "_arg_verbs": w.arg_verbs,
        "_unknown_external": bool(unknown_external),
    }
    return facts, w.values
