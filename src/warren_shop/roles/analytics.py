"""analytics: a fanout subscriber that counts every event, each one once (by message id)."""

from __future__ import annotations

from warren import Pool, TaskContext
from warren_shop.roles.common import Store

pool = Pool("analytics", all_events=True)

events = Store("analytics", "CREATE TABLE IF NOT EXISTS seen (message_id TEXT PRIMARY KEY, type TEXT NOT NULL);")


@pool.task("*")
def count(event: object, ctx: TaskContext) -> None:
    with events.transaction() as conn:
        conn.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (ctx.task_id, ctx.task_type))


def counts() -> dict[str, int]:
    with events.transaction() as conn:
        return dict(conn.execute("SELECT type, COUNT(*) FROM seen GROUP BY type").fetchall())
