"""One database for every role and the API: how the shop connects to it, and what it does when the
database is away or holds a schema the code does not know.

Every write is a short transaction that is safe to run again (keyed by message id, guarded by a
unique constraint or a conditional update), so a transaction that failed because the database went
away, or whose commit's outcome is unknown, is simply run again until ``retry_seconds`` have
passed; then ``StoreUnavailable`` makes a worker retry the task through its queue (never a
traceback loop, never a dead letter for an outage) and the API answer 503.

PostgreSQL through psycopg 3 in production; SQLite on one machine (``make demo``), where every
transaction takes the write lock at BEGIN (``BEGIN IMMEDIATE``) so that writers queue up instead of
failing, and several processes share the file safely.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from warren import RetryableError, TaskContext
from warren.errors import ConfigError, WarrenError
from warren_shop.settings import shop_settings

T = TypeVar("T")
log = logging.getLogger("warren_shop.store")
# Alembic announces its plugins and its dialect at INFO whenever a worker checks the schema: noise.
# What `warren-shop db upgrade` did, it says itself.
logging.getLogger("alembic").setLevel(logging.WARNING)


class StoreUnavailable(RetryableError, WarrenError):
    """The database did not answer within the retry window. A task raising it is retried through
    its queue; the API answers 503; a command exits 1 with this one line."""


class SchemaMismatch(ConfigError):
    """The database's schema is not the one this code was written for: a process exits 2."""


@dataclass(frozen=True, slots=True)
class Cause:
    """What made a change: recorded with every step of an order's or a notification's history."""

    message_id: str
    attempt: int
    worker: str
    at: datetime

    @classmethod
    def of(cls, ctx: TaskContext) -> Cause:
        return cls(ctx.task_id, ctx.attempt, ctx.worker, now())

    @classmethod
    def request(cls, message_id: str, *, worker: str) -> Cause:
        """A change an API request makes, for the message it is about to publish."""
        return cls(message_id, 1, worker, now())


def now() -> datetime:
    return datetime.now(UTC)


def process_name() -> str:
    """How a process that is not a worker names itself in histories (as workers do: host:pid)."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


def database_url(url: str) -> URL:
    """The URL SQLAlchemy should open: ``postgresql://`` means psycopg 3; only PostgreSQL and SQLite."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("invalid setting WARREN_SHOP_DATABASE_URL: not a database URL "
                          "(postgresql://user:password@host:5432/db or sqlite:////path/to/file)") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("invalid setting WARREN_SHOP_DATABASE_URL: SQLite needs a file "
                              "(sqlite:////path/to/file) that every process can open")
        return parsed.set(drivername="sqlite+pysqlite")
    raise ConfigError(f"invalid setting WARREN_SHOP_DATABASE_URL: {parsed.drivername!r} is not supported; "
                      "use postgresql:// or sqlite:///")


class Store:
    """The shop's database: an engine, transactions that survive outages, the schema's revision."""

    def __init__(self, url: str, *, retry_seconds: float = 0.0, name: str = "warren-shop") -> None:
        self.url = database_url(url)
        self.display_url = self.url.render_as_string(hide_password=True)
        self.retry_seconds = retry_seconds
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            Path(self.url.database or "").parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = sa.create_engine(
                self.url, pool_size=5, max_overflow=10, pool_timeout=30,
                connect_args={"connect_timeout": 5, "application_name": name[:63]},
            )
        # Round trips to the database (the benchmark counts them): every statement, every COMMIT,
        # and every BEGIN (on SQLite the BEGIN is one of the statements, see _sqlite_begin).
        self._counting = threading.Lock()
        self.round_trips = 0
        event.listen(self.engine, "before_cursor_execute", self._count)
        event.listen(self.engine, "commit", self._count)
        if self.dialect != "sqlite":
            event.listen(self.engine, "begin", self._count)

    def __repr__(self) -> str:
        return f"Store({self.display_url})"

    def _count(self, *_: Any) -> None:
        with self._counting:
            self.round_trips += 1

    def transaction(self, work: Callable[[Connection], T], *, write: bool = True,
                    retry_seconds: float | None = None) -> T:
        """``work(conn)`` in one transaction, committed when it returns. Run again while the
        database does not answer, for up to ``retry_seconds`` (the store's by default): every
        transaction of the shop is safe to repeat. Then ``StoreUnavailable``."""
        window = self.retry_seconds if retry_seconds is None else retry_seconds
        deadline = time.monotonic() + window
        delay, failures = 0.05, 0
        while True:
            try:
                with self.engine.connect() as conn:
                    if not write:
                        conn.execution_options(warren_read_only=True)
                    with conn.begin():
                        result = work(conn)
                if failures:
                    log.warning("database %s answers again", self.display_url)
                return result
            except DBAPIError as e:
                if not self._transient(e):
                    raise
                failures += 1
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(f"database unavailable: {describe(e)}") from None
                if failures == 1:
                    log.warning("database %s unavailable (%s); retrying for up to %gs",
                                self.display_url, describe(e), window)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def read(self, work: Callable[[Connection], T], *, retry_seconds: float | None = None) -> T:
        """``transaction`` for work that only reads (on SQLite it does not take the write lock)."""
        return self.transaction(work, write=False, retry_seconds=retry_seconds)

    def _transient(self, error: DBAPIError) -> bool:
        """Worth trying again: the connection went away, the server is not up, a lock or deadlock."""
        if error.connection_invalidated or isinstance(error, InterfaceError):
            return True
        if not isinstance(error, OperationalError):
            return False
        if self.dialect == "sqlite":  # its OperationalError also means "no such table"
            return any(word in str(error.orig).lower() for word in ("locked", "busy", "disk i/o"))
        return True

    def revision(self, *, retry_seconds: float | None = None) -> tuple[str, ...]:
        """The schema revisions the database is at (none for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        def heads(conn: Connection) -> tuple[str, ...]:
            return tuple(MigrationContext.configure(conn).get_current_heads())

        return self.read(heads, retry_seconds=retry_seconds)

    def require_schema(self, *, wait: float | None = None) -> None:
        """Return if the database's schema is the one this code knows; else ``SchemaMismatch``
        saying what to do. Waits up to ``wait`` seconds (the store's window) for the database."""
        from warren_shop.store.migrate import describe_mismatch

        problem = describe_mismatch(self.revision(retry_seconds=wait), self.display_url)
        if problem:
            raise SchemaMismatch(problem)

    def upgrade(self, *, wait: float | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Migrate to the newest schema; idempotent, and safe when several processes run it at
        once (they take turns). (revisions before, revisions after)."""
        from warren_shop.store.migrate import upgrade

        return self.transaction(upgrade, retry_seconds=wait)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun below, not by the driver: BEGIN IMMEDIATE takes the write lock first,
    # so two writers never deadlock upgrading their read locks (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _sqlite_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get("warren_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def describe(error: DBAPIError) -> str:
    """The driver's first line, never the SQL or its parameters (they may hold personal data)."""
    text = str(error.orig).strip().splitlines()
    return (text[0] if text else type(error.orig).__name__)[:300]


def insert_new(conn: Connection, table: sa.Table, values: Mapping[str, Any], *, key: Sequence[str]) -> bool:
    """INSERT ... ON CONFLICT (key) DO NOTHING: True if the row is new. The unique key, not a
    read-then-write, decides: two pods inserting the same row at once get one row."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=list(key))
                 .returning(table.c[key[0]]))  # a row back only if inserted (rowcount is unreliable here)
    return conn.execute(statement).first() is not None


def rows(conn: Connection, statement: sa.Select[Any]) -> Iterable[sa.Row[Any]]:
    return conn.execute(statement).all()


def utc(value: datetime) -> datetime:
    """SQLite gives back naive datetimes: they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@functools.cache
def database() -> Store:
    """The store of this process, from WARREN_SHOP_DATABASE_URL (or its _FILE)."""
    settings = shop_settings()
    return Store(settings.resolved_database_url(), retry_seconds=settings.database_retry_seconds)
