"""audit: a topic subscriber on ``order.#`` that keeps an append-only log of every order event."""

from __future__ import annotations

import json
from typing import Any

from warren import Pool, TaskContext
from warren_shop.roles.common import Store

pool = Pool("audit", events=("order.#",))

log = Store(
    "audit",
    """CREATE TABLE IF NOT EXISTS log (
        message_id TEXT PRIMARY KEY, type TEXT NOT NULL, order_id TEXT, body TEXT NOT NULL);""",
)


@pool.task("*")
def record(event: Any, ctx: TaskContext) -> None:
    order_id = event.get("order_id") if isinstance(event, dict) else None
    with log.transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO log VALUES (?, ?, ?, ?)", (ctx.task_id, ctx.task_type, order_id, json.dumps(event))
        )


def entries() -> list[tuple[str, str | None]]:
    with log.transaction() as conn:
        return conn.execute("SELECT type, order_id FROM log ORDER BY rowid").fetchall()
