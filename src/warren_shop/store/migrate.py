"""Alembic, driven from code: ``warren-shop db upgrade`` and the start-up schema check.

No alembic.ini: the migrations ship inside the package (``migrations/``) and run on the store's own
connection, in one transaction. Concurrent upgrades (every pod's init container runs one) take
turns: on PostgreSQL behind an advisory lock the migrating transaction holds, on SQLite behind the
write lock its BEGIN IMMEDIATE takes; the second finds the schema current and does nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant will do, as long as nothing else in the database uses it: "WARREN" and 1.
ADVISORY_LOCK = 0x5741_5252_454E_0001


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    revision = scripts().get_current_head()
    assert revision is not None, "the package holds no migrations"
    return revision


def upgrade(conn: Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Migrate to head on ``conn`` (inside its transaction): (revisions before, revisions after)."""
    if conn.dialect.name == "postgresql":
        # Held until the migrating transaction ends: a second upgrade waits here, then reads the
        # revision the first one committed and has nothing left to do. (SQLite: BEGIN IMMEDIATE.)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    before = tuple(MigrationContext.configure(conn).get_current_heads())
    command.upgrade(config(conn), "head")
    return before, tuple(MigrationContext.configure(conn).get_current_heads())


def describe_mismatch(current: tuple[str, ...], where: str) -> str | None:
    """None when ``current`` is this code's schema; else what is wrong and what to do about it."""
    if current == (head(),):
        return None
    if not current:
        return f"the database {where} has no schema yet: run `warren-shop db upgrade`"
    known = {script.revision for script in scripts().walk_revisions()}
    revisions = ", ".join(current)
    if any(revision not in known for revision in current):
        return (f"the database {where} is at schema revision {revisions}, which this warren-shop does not know "
                f"(a newer warren-shop migrated it; this one knows up to {head()}): deploy the newer version")
    return (f"the database {where} is at schema revision {revisions}, older than this warren-shop's {head()}: "
            "run `warren-shop db upgrade`")
