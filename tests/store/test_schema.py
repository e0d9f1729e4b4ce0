"""The schema: migrations create exactly the tables the code uses, upgrades are idempotent and may
run side by side, and code refuses a database whose schema it does not know."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.support.database import fresh_postgres_url
from warren.testing.processes import child_python_path
from warren_shop.store import SchemaMismatch, Store
from warren_shop.store.migrate import head
from warren_shop.store.schema import metadata


def test_the_migrations_create_exactly_the_tables_of_the_code(store: Store) -> None:
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
    assert store.revision() == (head(),)


def test_an_upgrade_of_a_current_database_changes_nothing(store: Store) -> None:
    assert store.upgrade() == ((head(),), (head(),))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite'}"
    return request.getfixturevalue("postgres").create_database(f"e{secrets.token_hex(5)}")


def test_db_upgrade_run_by_several_pods_at_once_migrates_once_and_all_succeed(empty_database_url: str) -> None:
    env = {**os.environ, "WARREN_SHOP_DATABASE_URL": empty_database_url, "PYTHONPATH": child_python_path({})}
    upgrades = [subprocess.Popen([sys.executable, "-m", "warren_shop", "db", "upgrade"], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outputs = [(u.wait(timeout=60), *u.communicate()) for u in upgrades]
    assert [code for code, _out, _err in outputs] == [0, 0, 0], outputs
    said = sorted(out for _code, out, _err in outputs)
    assert sum("upgraded from an empty database" in line for line in said) == 1, said
    assert sum("already current" in line for line in said) == 2, said
    assert sum("5 SKU(s) stocked" in line for line in said) == 1  # the catalog is stocked once too
    assert Store(empty_database_url).revision() == (head(),)


def test_an_empty_database_is_refused_with_what_to_run(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(SchemaMismatch, match=r"has no schema yet: run `warren-shop db upgrade`"):
        store.require_schema()


def test_a_schema_from_a_newer_version_is_refused(store: Store) -> None:
    store.transaction(lambda conn: conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'")))
    with pytest.raises(SchemaMismatch, match="9999, which this warren-shop does not know"):
        store.require_schema()


def test_the_password_never_appears_in_what_the_store_says(postgres) -> None:
    url = fresh_postgres_url(postgres).replace("warren@", "warren:s3cret-pw@")
    store = Store(url)
    assert "s3cret-pw" not in repr(store) and "s3cret-pw" not in store.display_url
    store.close()
