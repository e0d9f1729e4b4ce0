"""Pools that exist only for tests."""

from warren import Pool, TaskContext

# A pool whose events nobody subscribes to: every completion event is unroutable.
orphan = Pool("orphan")


@orphan.task("work")
def work(payload: object, ctx: TaskContext) -> None:
    ctx.emit("orphan.done", {"id": ctx.task_id})
