"""analytics: a fanout subscriber that counts every event, each one once (by message id)."""

from __future__ import annotations

from warren import Pool, TaskContext
from warren_shop.store import Cause, database, effects

pool = Pool("analytics", all_events=True)


@pool.task("*")
def count(event: object, ctx: TaskContext) -> None:
    database().transaction(lambda conn: effects.count_event(conn, ctx.task_type, Cause.of(ctx)))
