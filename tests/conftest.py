"""Shared fixtures: a real PostgreSQL for every test that asks for one (pytest-postgresql).

Without ``--postgresql-port`` the embedded cluster is the server, found as every operator command
finds it (``scripts/database.py``; as root it belongs to an unprivileged user). It is started the
first time a test requests a database (``dsn``, ``db``, ``module_dsn``, ``postgresql``), so unit
runs never touch PostgreSQL. Each test gets a fresh database cloned from a template that has
every migration applied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from scripts import database, migrate


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> str:
    """The server the test databases are made on: ``--postgresql-port`` when given, else the
    embedded cluster, started now (only sessions with a database test get here)."""
    config = request.config
    if config.getoption("postgresql_port", None) or os.environ.get("GOVRIX_TEST_NO_EMBEDDED"):
        return "configured"
    try:
        url = database.locate(env={}).url  # always the embedded one, whatever the shell says
    except database.DatabaseError as e:
        pytest.exit(f"no PostgreSQL for the database tests: {e}", returncode=3)
    info = psycopg.conninfo.conninfo_to_dict(url)
    config.option.postgresql_host = info["host"]
    config.option.postgresql_port = int(str(info["port"]))
    config.option.postgresql_user = info["user"]
    config.option.postgresql_password = info["password"]
    config.option.postgresql_dbname = f"govrix_test_{os.getpid()}"
    return url


def _load_schema(host: str, port: int, user: str, dbname: str, password: str, **_: Any) -> None:
    migrate.apply(
        psycopg.conninfo.make_conninfo(
            host=host, port=port, user=user, dbname=dbname, password=password
        )
    )


_template = factories.postgresql_noproc(load=[_load_schema])


@pytest.fixture(scope="session")
def postgresql_noproc(request: pytest.FixtureRequest, pg_server: str) -> Any:
    """pytest-postgresql's server fixture, made only once ``pg_server`` has configured it."""
    return request.getfixturevalue("_template")


postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def dsn(postgresql: psycopg.Connection[Any]) -> str:
    """Connection string of this test's fresh, migrated database."""
    info = postgresql.info
    return psycopg.conninfo.make_conninfo(
        host=info.host, port=info.port, user=info.user, dbname=info.dbname, password=info.password
    )


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def module_dsn(postgresql_noproc: Any) -> Iterator[str]:
    """A fresh migrated database shared by one test module (e2e modules start one proxy each)."""
    import uuid

    p = postgresql_noproc
    name = f"govrix_mod_{uuid.uuid4().hex[:10]}"
    with DatabaseJanitor(
        user=p.user,
        host=p.host,
        port=p.port,
        dbname=name,
        template_dbname=p.template_dbname,
        password=p.password,
    ):
        yield psycopg.conninfo.make_conninfo(
            host=p.host, port=p.port, user=p.user, password=p.password, dbname=name
        )


@pytest.fixture(scope="module")
def fake() -> Iterator[Any]:
    """The fake LLM provider (and MCP server) on loopback, one per module."""
    from tests.fakeprovider import FakeProvider

    f = FakeProvider().start()
    yield f
    f.stop()
