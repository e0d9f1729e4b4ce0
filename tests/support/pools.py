"""Pools that exist only for tests."""

from warren import Pool, TaskContext

# A pool whose events nobody subscribes to: every completion event is unroutable.
orphan = Pool("orphan")


@orphan.task("work")
def work(payload: object, ctx: TaskContext) -> None:
    ctx.emit("orphan.done", {"id": ctx.task_id})


# A pool whose handler logs through ctx.logger, and fails when asked to.
chatty = Pool("chatty")


@chatty.task("say")
def say(payload: dict[str, object], ctx: TaskContext) -> None:
    ctx.logger.info("saying %s", payload.get("text"))
    if payload.get("fail"):
        raise RuntimeError("asked to fail")
