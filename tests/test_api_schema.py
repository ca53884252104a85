"""Property-based run of schemathesis over ``/schema``: no 5xx, every response matches the schema.

The live server serves a database with events and agents in it, so path parameters sometimes
hit real rows. The endless SSE route is left out (it is tested in test_api_stream.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scripts.apikey import create_key
from scripts.fakedata import make_events
from tests.apiutil import AUTH, add_agent, live_server, write_events

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One database and one live server for every operation of the module (what the
    operations change, e.g. a budget made by ``createBudget``, only gives later ones more rows
    to hit; each response is still checked against the schema)."""
    evs = make_events(40, sessions=4, agents=2, seed=11)
    write_events(module_dsn, evs, tmp_path_factory.mktemp("schema-spool"))
    with psycopg.connect(module_dsn, autocommit=True) as db:
        add_agent(db, evs[0].agent_id, "billing-agent")
        _, key = create_key(db, "acme", "enterprise")
    SCORING_AUTH["X-API-Key"] = key
    with live_server(module_dsn) as srv:
        yield schemathesis.openapi.from_url(f"{srv.url}/schema/openapi.json")


#: The action risk scoring routes (auth by X-API-Key, mounted in the same app).
SCORING = ["scoreEvent", "acceptEventBatch", "listScores", "scoreSummary", "getScore"]
SCORING_AUTH: dict[str, str] = {}

OPERATIONS = [
    "listEvents", "getEvent", "listSessionEvents", "listAgents", "getAgent", "updateAgent",
    "retireAgent", "listAgentEvents", "listSessions", "getSession", "verifySession", "health",
    "ready", "listBudgets", "createBudget", "getBudget", "updateBudget", "deleteBudget",
    "statsOverview", "statsAgents", "listKeys", "createKey", "revokeKey", "getPolicies",
    "getPolicyVersion", "validatePolicy", "putPolicy", "listAudit", "statsPolicies", "statsProxies",
    "listAllScores", "listScoreCustomers", "getCustomerScore",
]  # fmt: skip


@pytest.mark.parametrize("operation_id", OPERATIONS + SCORING)
def test_api_conforms_to_its_schema(api_schema: Any, operation_id: str) -> None:
    # Driven by hand (not schemathesis' pytest plugin): one hypothesis run per operation.
    ops = [r.ok() for r in api_schema.get_all_operations()]
    op = next(o for o in ops if o.definition.raw.get("operationId") == operation_id)

    @given(case=op.as_strategy())
    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def run(case: Any) -> None:
        # /api/v1/events/{id} with id "stream" is the SSE route by design (the seeds' paths):
        # another operation, tested in test_api_stream.py.
        assume(
            not (
                operation_id == "getEvent"
                and (case.path_parameters or {}).get("event_id") == "stream"
            )
        )
        headers = SCORING_AUTH if operation_id in SCORING else AUTH
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def test_every_operation_is_covered(api_schema: Any) -> None:
    ids = {r.ok().definition.raw.get("operationId") for r in api_schema.get_all_operations()}
    assert ids == {*OPERATIONS, *SCORING, "streamEvents"}
