"""Fixtures for the shop's store: a private PostgreSQL cluster for the session, and a fresh,
migrated database per test on PostgreSQL and on SQLite (``store`` runs each test on both).

The cluster is Debian's PostgreSQL (``make deps`` installs it), in a temp dir on a free port, run
as the ``postgres`` user when the tests run as root; never the system cluster. It starts the first
time a test asks for it, so sessions without such a test never start one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from warren_shop.local import LocalPostgres, postgresql_installed
from warren_shop.store import Store

TEMPLATE = "warren_shop_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A running private PostgreSQL cluster (fsync off: nothing here needs to survive the machine),
    holding a migrated template database that ``fresh_postgres_url`` copies."""
    if not postgresql_installed():
        # Never skip: a store test that does not run on PostgreSQL proves little about production.
        pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed: run `make deps` (scripts/install-deps.sh), "
                    "then run the tests again.", pytrace=False)
    with LocalPostgres(durable=False, name="warren-test") as cluster:
        template = Store(cluster.create_database(TEMPLATE))
        template.upgrade()
        template.close()  # a template may have no connections when it is copied
        yield cluster


def fresh_postgres_url(cluster: LocalPostgres) -> str:
    """A new database with the current schema (a copy of the template: milliseconds)."""
    return cluster.create_database(f"t{secrets.token_hex(5)}", template=TEMPLATE)


def fresh_sqlite_url(directory: Path) -> str:
    url = f"sqlite:///{directory / f'shop-{secrets.token_hex(3)}.sqlite'}"
    store = Store(url)
    store.upgrade()
    store.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, migrated database: each test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return fresh_sqlite_url(tmp_path)
    return fresh_postgres_url(request.getfixturevalue("postgres"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(database_url, retry_seconds=5)
    yield s
    s.close()
