"""The PII benchmark's corpus generator keeps its promises: deterministic, and the counts it claims.

These tests check the test data, never the scanner's scores (``scripts/govrix bench pii`` reports
those).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from scripts import pii_corpus
from scripts.pii_corpus import CARD_BRANDS, NEGATIVE_CATEGORIES, SHAPES, TYPES, VENDORS, Record


@pytest.fixture(scope="module")
def corpus() -> list[Record]:
    return pii_corpus.generate()


def test_same_seed_same_corpus(corpus: list[Record]) -> None:
    assert pii_corpus.digest(pii_corpus.generate()) == pii_corpus.digest(corpus)


def test_corpus_does_not_follow_the_hash_seed(corpus: list[Record]) -> None:
    """Faker providers that draw from a set would make the corpus differ from run to run."""
    code = "from scripts import pii_corpus; print(pii_corpus.digest(pii_corpus.generate()))"
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == pii_corpus.digest(corpus)


def test_other_seed_other_corpus(corpus: list[Record]) -> None:
    other = pii_corpus.generate(pii_corpus.SEED + 1)
    assert len(other) == len(corpus)
    assert pii_corpus.digest(other) != pii_corpus.digest(corpus)


def test_sizes(corpus: list[Record]) -> None:
    sources = Counter(r.source for r in corpus)
    assert len(corpus) >= 3000
    assert sources["negative"] >= 900
    assert Counter(r.kind for r in corpus if r.source == "negative") == {
        f"neg/{c}": pii_corpus.NEGATIVES_PER_CATEGORY for c in NEGATIVE_CATEGORIES
    }
    assert sources["presidio"] == pii_corpus.PRESIDIO
    assert sources["secret"] == len(VENDORS) * pii_corpus.SECRETS_PER_VENDOR
    assert sources["mixed"] == pii_corpus.MIXED
    assert len({r.id for r in corpus}) == len(corpus)


def test_labels_use_the_scanner_types_and_negatives_have_none(corpus: list[Record]) -> None:
    for r in corpus:
        assert set(r.labels) <= set(TYPES), r.id
        assert all(n > 0 for n in r.labels.values()), r.id
        if r.source == "negative":
            assert not r.labels, r.id
        elif r.source != "presidio":  # a template may hold no placeholder we score
            assert r.labels, r.id


def test_every_type_meets_every_shape(corpus: list[Record]) -> None:
    seen = {(t, r.shape) for r in corpus for t in r.labels}
    assert seen == {(t, s) for t in TYPES for s in SHAPES}
    negative_shapes = Counter(r.shape for r in corpus if r.source == "negative")
    assert set(negative_shapes) == set(SHAPES)


def test_faker_coverage(corpus: list[Record]) -> None:
    faker = [r for r in corpus if r.source == "faker"]
    assert len({r.locale for r in faker}) >= 15
    assert len({r.locale for r in faker if r.phone_format}) >= 15
    formats = {r.phone_format for r in faker if r.phone_format}
    assert {"national", "national_ext", "intl_plus", "intl_plus_ext", "intl_00"} <= formats
    brands = {r.kind.split("/")[1] for r in faker if r.kind.startswith("credit_card/")}
    assert brands == set(CARD_BRANDS)
    ibans = {r.kind.split("/")[1] for r in faker if r.kind.startswith("iban/")}
    assert len(ibans) >= 10
    assert {r.kind for r in faker if r.kind.startswith("ipv6/")} == {
        "ipv6/compressed",
        "ipv6/exploded",
        "ipv6/mapped",
    }


def test_vendors(corpus: list[Record]) -> None:
    listed = {
        "github_classic",
        "gitlab",
        "npm",
        "huggingface",
        "sendgrid",
        "slack_bot",
        "slack_webhook",
        "stripe",
        "google_api",
        "aws_access_key_id",
        "aws_secret_key",
        "openai",
        "anthropic",
    }
    vendors = Counter(r.vendor for r in corpus if r.source == "secret")
    assert listed <= set(vendors)
    assert len(vendors) >= 30
    groups = {r.vendor_group for r in corpus if r.source == "secret"}
    assert groups == {"listed", "other"}


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_bodies_have_their_shape(corpus: list[Record]) -> None:
    for r in corpus:
        if r.shape == "text":
            continue
        doc = json.loads(r.body)
        if r.shape == "mcp_tools_call":
            assert doc["method"] == "tools/call" and isinstance(doc["params"]["arguments"], dict)
        elif r.shape.startswith("openai"):
            roles = [m["role"] for m in doc["messages"]]
            if r.shape in ("openai_tool_args", "openai_tool_result"):
                assert roles[-2:] == ["assistant", "tool"], r.id
                json.loads(doc["messages"][-2]["tool_calls"][0]["function"]["arguments"])
            if r.shape == "openai_parts":
                assert isinstance(doc["messages"][-1]["content"], list)
        else:
            assert "max_tokens" in doc
            if r.shape != "anthropic_user":
                blocks = [
                    b["type"]
                    for m in doc["messages"]
                    if isinstance(m["content"], list)
                    for b in m["content"]
                ]
                assert "tool_use" in blocks and "tool_result" in blocks, r.id


def test_tool_shapes_put_the_value_in_the_tool_part(corpus: list[Record]) -> None:
    """The labelled text sits in the tool arguments / tool result, not in a chat turn."""
    for r in corpus:
        if not r.labels or r.shape not in ("openai_tool_args", "anthropic_tool_use"):
            continue
        doc = json.loads(r.body)
        if r.shape == "openai_tool_args":
            chat = [m["content"] for m in doc["messages"] if m["role"] != "assistant"]
            assert chat[-1] == "created" and "ticket" in chat[-2], r.id
        else:
            tool_use = doc["messages"][1]["content"][1]
            assert set(tool_use["input"]) == {"ticket_id", "body"}, r.id
