"""What the proxy and the API share, checked so that neither side can drift (DESIGN.md §1).

- The SQL schema is the interface: the proxy's event row (``addon/event.py``: ``COLUMNS`` and the
  binary-COPY ``PG_TYPES``) and the API's event shape (``api/schemas.py``) must both be exactly
  the ``events`` table that the migrations in ``sql/`` create.
- Pure domain modules may be shared (imported by both sides) only while they import neither
  mitmproxy nor Litestar; nothing is copied instead.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest

from addon.event import COLUMNS, PG_TYPES
from api.schemas import EVENT_FIELDS

# PG_TYPES spells binary-COPY type names; information_schema names array types by element.
_UDT = {"text[]": "_text"}


def _events_table(db: psycopg.Connection[Any]) -> dict[str, str]:
    rows = db.execute(
        "SELECT column_name, udt_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'events'"
        " ORDER BY ordinal_position"
    ).fetchall()
    return {str(name): str(udt) for name, udt in rows}


def test_proxy_event_columns_are_the_events_table(db: psycopg.Connection[Any]) -> None:
    table = _events_table(db)
    assert table, "migrations created no events table"
    # Same names both ways: a column only in SQL would be stored outside the lineage hash, one
    # only in the Struct would make every COPY fail.
    assert sorted(table) == sorted(COLUMNS)
    declared = {c: _UDT.get(t, t) for c, t in zip(COLUMNS, PG_TYPES, strict=True)}
    assert declared == {c: table[c] for c in COLUMNS}, "PG_TYPES disagree with sql/"


def test_api_event_fields_are_the_events_table(db: psycopg.Connection[Any]) -> None:
    # The API selects EVENT_FIELDS by name and converts rows positionally into EventOut.
    assert sorted(EVENT_FIELDS) == sorted(_events_table(db))


SHARED = [
    "addon.ids",
    "addon.event",
    "addon.lineage",
    "api.scoring",
    "api.scoring.bands",
]


@pytest.mark.parametrize("module", SHARED)
def test_shared_modules_stay_pure(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mitmproxy', 'litestar'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "", f"{module} pulls in {out}"
