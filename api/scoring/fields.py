"""Auto-classification of data field names against the sensitive-field table (`fields.yaml`)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import get_args

import msgspec
import yaml

from api.scoring.models import Classification, DataField

FIELDS_FILE = Path(__file__).with_name("fields.yaml")
CLASSIFICATIONS: tuple[Classification, ...] = get_args(Classification)

# Which class wins when two table entries of the same length match one name: the one whose
# disclosure does the most harm (credentials before PHI before card data…).
_TIE_ORDER: dict[str, int] = {
    c: i
    for i, c in enumerate(
        (
            "auth",
            "health",
            "financial",
            "pii_sensitive",
            "legal",
            "pii",
            "internal",
            "public",
        )
    )
}

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SPLIT_RE = re.compile(r"[^a-z0-9]+")
# Version and counter suffixes carry no meaning: api_key_v2, password2, email_1.
_NOISE_RE = re.compile(r"^(?:v?\d+)$")


class FieldTable(msgspec.Struct, frozen=True):
    """The sensitive-field table: names (snake_case) → classification, plus class weights."""

    weights: dict[Classification, float]
    fields: dict[str, Classification]


def load_field_table(path: Path = FIELDS_FILE) -> FieldTable:
    """Load and validate the field table; raises ValueError naming the file on bad content."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        table = msgspec.convert(raw, FieldTable)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: invalid field table: {exc}") from exc
    missing = set(CLASSIFICATIONS) - set(table.weights)
    if missing:
        raise ValueError(f"{path}: weights missing for {sorted(missing)}")
    return table


@lru_cache(maxsize=16384)
def words(name: str) -> tuple[str, ...]:
    """Split a field name into lower-case words: camelCase, kebab, snake, dotted paths."""
    spaced = _CAMEL_RE.sub("_", name)
    return tuple(w for w in _SPLIT_RE.split(spaced.lower()) if w and not _NOISE_RE.match(w))


class FieldClassifier:
    """Classifies field names; results are cached because agents reuse the same few names."""

    def __init__(self, table: FieldTable) -> None:
        self.table = table
        self.weights: dict[str, float] = {str(k): v for k, v in table.weights.items()}
        self._max_words = max(len(k.split("_")) for k in table.fields)
        self.classify = lru_cache(maxsize=8192)(self._classify)

    def _lookup(self, key: str) -> Classification | None:
        found = self.table.fields.get(key)
        if found is None and key.endswith("s") and len(key) > 3:
            found = self.table.fields.get(key[:-1])  # plurals: emails, passwords
        return found

    def _classify(self, name: str) -> Classification | None:
        """The class of a bare field name, or None when nothing in the table matches."""
        ws = words(name)
        if not ws:
            return None
        joined = "".join(ws)
        for n in range(min(len(ws), self._max_words), 0, -1):
            hits: list[Classification] = []
            for i in range(len(ws) - n + 1):
                found = self._lookup("_".join(ws[i : i + n]))
                if found is not None:
                    hits.append(found)
            if hits:
                return min(hits, key=_TIE_ORDER.__getitem__)
        # Glued words ("creditcardnumber", "apikey") only match whole entries.
        return self._lookup(joined) or self.table.fields.get(joined.replace("_", ""))

    def classify_field(self, item: str | DataField) -> tuple[str, Classification | None]:
        """(normalised name, classification) of one accessed field; an explicit class wins."""
        if isinstance(item, DataField):
            name = "_".join(words(item.field))
            return name, item.classification or self.classify(item.field)
        return "_".join(words(item)), self.classify(item)

    def weight(self, classification: str | None) -> float:
        """The risk weight of a class; unclassified fields weigh like public ones."""
        return self.weights.get(classification, 1.0) if classification else 1.0


@lru_cache(maxsize=1)
def default_classifier() -> FieldClassifier:
    """The classifier over the shipped table, loaded once."""
    return FieldClassifier(load_field_table())


def is_classification(value: str) -> bool:
    """Whether `value` names one of the eight classes."""
    return value in CLASSIFICATIONS


__all__ = [
    "CLASSIFICATIONS",
    "FieldClassifier",
    "FieldTable",
    "default_classifier",
    "is_classification",
    "load_field_table",
    "words",
]
