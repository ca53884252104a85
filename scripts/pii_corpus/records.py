"""The corpus's two record types, and the scanner type names its labels use."""

from __future__ import annotations

from dataclasses import dataclass

TYPES = ("email", "phone", "ssn", "credit_card", "ipv4", "ipv6", "iban", "secret")


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
