"""What the reference workload's roles share: settings, state on disk, simulated slowness and faults.

State lives in one SQLite file per role under ``WARREN_SHOP_DATA_DIR``, opened per operation, so
several worker processes of one role on one machine (the demo, the tests) share it safely. On
Kubernetes each pod has its own: a real deployment keeps this state in its own database.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from warren import RetryableError
from warren_shop.settings import shop_settings as shop

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9 ]{6,20}$"


# Read when a role is loaded, so a bad WARREN_SHOP_* value stops the worker at start-up (exit 2,
# naming the variable) instead of failing every task.
shop()


class Strict(BaseModel):
    """Messages reject fields they do not know: a typo is a schema violation, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Customer(Strict):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)


class Item(Strict):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=100)


def simulate(role: str, *, ms: int) -> None:
    """Take ``ms`` of (simulated) work, and fail transiently at the role's configured rate."""
    if ms:
        time.sleep(ms / 1000)
    rate = shop().failure_rate.get(role, 0.0)
    if rate and random.random() < rate:
        raise RetryableError(f"simulated {role} outage")


class Store:
    """One SQLite file; a connection per transaction, safe across threads and processes."""

    def __init__(self, name: str, schema: str) -> None:
        self.name = name
        self.schema = schema
        self._ready = False

    @property
    def path(self) -> Path:
        return shop().data_dir / f"{self.name}.sqlite"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue up instead of failing on a busy database."""
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if not self._ready:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(self.schema)
                self._ready = True
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()
