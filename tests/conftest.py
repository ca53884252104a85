"""Shared fixtures: a real PostgreSQL for every test (pytest-postgresql, no mocks).

Without ``--postgresql-port`` the embedded cluster (scripts/pgembed.py) is started once and used
as the server: it handles running as root (CI) by owning the cluster as an unprivileged user.
Each test gets a fresh database cloned from a template that has every migration applied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from scripts import migrate, pgembed


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("postgresql_port", None) or os.environ.get("GOVRIX_TEST_NO_EMBEDDED"):
        return
    cluster = pgembed.start()
    config.option.postgresql_host = "127.0.0.1"
    config.option.postgresql_port = cluster.port()
    config.option.postgresql_user = pgembed.DB_USER
    config.option.postgresql_password = cluster.password()
    config.option.postgresql_dbname = f"govrix_test_{os.getpid()}"


def _load_schema(host: str, port: int, user: str, dbname: str, password: str, **_: Any) -> None:
    migrate.apply(
        psycopg.conninfo.make_conninfo(
            host=host, port=port, user=user, dbname=dbname, password=password
        )
    )


postgresql_noproc = factories.postgresql_noproc(load=[_load_schema])
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
