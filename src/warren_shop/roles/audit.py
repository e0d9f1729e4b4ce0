"""audit: a topic subscriber on ``order.#`` that keeps an append-only log of every order event
(the database refuses to change or delete an entry)."""

from __future__ import annotations

from typing import Any

from warren import Pool, TaskContext
from warren_shop.store import Cause, database, effects

pool = Pool("audit", events=("order.#",))


@pool.task("*")
def record(event: Any, ctx: TaskContext) -> None:
    database().transaction(lambda conn: effects.append_audit(conn, ctx.task_type, event, Cause.of(ctx)))
