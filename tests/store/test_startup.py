"""A worker or the API started against a database it cannot use stops at once, in one line saying
what to do: exit 2 for a schema it does not know (or a URL it cannot use), 1 for a database that
does not answer. No broker is needed: the check comes first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.database import fresh_sqlite_url
from warren.testing.processes import child_python_path
from warren_shop.store import Store

COMMANDS = {"worker": ["warren", "worker", "payments"], "api": ["warren_shop", "api"]}
BARE = {"PATH": "/usr/bin:/bin", "PYTHONPATH": child_python_path({})}  # this checkout's code, nothing else set
# The API's keys are checked before its database (tests/integration/test_api_edge.py): here, none.
OPEN = {"WARREN_API_AUTH": "none"}


def start(command: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *COMMANDS[command]], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**BARE, **OPEN, "WARREN_BROKER_URL": "amqp://127.0.0.1:1/", **env})


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_empty_database_stops_it_saying_to_run_db_upgrade(command: str, tmp_path: Path) -> None:
    done = start(command, tmp_path, WARREN_SHOP_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite'}")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.endswith("has no schema yet: run `warren-shop db upgrade`")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_schema_from_a_newer_version_stops_it(command: str, tmp_path: Path) -> None:
    url = fresh_sqlite_url(tmp_path)
    store = Store(url)
    store.transaction(lambda conn: conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'"))
    store.close()
    done = start(command, tmp_path, WARREN_SHOP_DATABASE_URL=url)
    assert done.returncode == 2, done.stderr
    assert "schema revision 0099, which this warren-shop does not know" in done.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_database_that_does_not_answer_stops_it_with_1_without_the_password(command: str, tmp_path: Path) -> None:
    done = start(command, tmp_path, WARREN_SHOP_DATABASE_URL="postgresql://warren:pw-secret@127.0.0.1:1/shop",
                 WARREN_SHOP_DATABASE_RETRY_SECONDS="0.3")
    assert done.returncode == 1, done.stderr
    *waiting, line = done.stderr.strip().splitlines()  # a warning says how long it waits, then this
    assert ": database unavailable: " in line and line.startswith(("warren: ", "warren-shop: "))
    assert len(waiting) <= 1 and "pw-secret" not in done.stderr


def db_upgrade(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warren_shop", "db", "upgrade"], capture_output=True, text=True,
                          timeout=60, env={**BARE, **env})


def test_db_upgrade_refuses_a_database_it_does_not_support() -> None:
    done = db_upgrade(WARREN_SHOP_DATABASE_URL="mysql://u:p@h/db")
    assert done.returncode == 2
    assert done.stderr.strip() == ("warren-shop: invalid setting WARREN_SHOP_DATABASE_URL: 'mysql' is not supported; "
                                   "use postgresql:// or sqlite:///")


def test_db_upgrade_reads_the_url_from_a_mounted_secret_file(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(f"sqlite:///{tmp_path / 'shop.sqlite'}\n")
    done = db_upgrade(WARREN_SHOP_DATABASE_URL_FILE=str(tmp_path / "url"))
    assert done.returncode == 0, done.stderr
    assert "upgraded from an empty database" in done.stdout
