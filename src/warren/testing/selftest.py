"""The selftest pool: tasks that work, fail, refuse or crash on demand.

It exists so the runtime can be proved end to end (tests, chaos scenarios, benchmarks, a fresh
cluster) without any business code. Each completed task emits ``selftest.completed`` with the
task id and the worker that did it; the ``selftest-ledger`` subscription collects those events.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from warren import Pool, TaskContext
from warren.config import load
from warren.errors import PermanentError, RetryableError
from warren.topology import Subscription

pool = Pool(
    "selftest",
    collectors=(Subscription("selftest-ledger", fanout=True),),
    description="runtime self-test tasks",
)

COMPLETED = "selftest.completed"
CRASH_EXIT_STATUS = 137  # what a SIGKILLed process reports


class Work(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ms: int = Field(default=0, ge=0, le=3_600_000, description="Simulated processing time.")


class Fail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(default="simulated failure", max_length=500)


class Nothing(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelftestSettings(BaseSettings):
    """Knobs of the selftest pool, used to make one worker slower than another in tests."""

    model_config = SettingsConfigDict(env_prefix="WARREN_SELFTEST_", extra="ignore", frozen=True)

    extra_ms: int = Field(default=0, ge=0, le=600_000, description="Added to every selftest work task, ms.")
    effects_file: Path | None = Field(
        default=None,
        description="Each work task that runs appends its id here: a count of what the handlers did that "
        "does not rely on Warren's own events (chaos tests compare the two).",
    )


@functools.cache
def _settings() -> SelftestSettings:
    return load(SelftestSettings)


@pool.task
def work(payload: Work, ctx: TaskContext) -> dict[str, object]:
    settings = _settings()
    ms = payload.ms + settings.extra_ms
    if ms:
        time.sleep(ms / 1000)
    if settings.effects_file is not None:
        # One short O_APPEND write per task: lines from concurrent processes never interleave.
        with settings.effects_file.open("a", encoding="utf-8") as effects:
            effects.write(f"{ctx.task_id}\n")
    done = {
        "id": ctx.task_id,
        "worker": ctx.worker,
        "attempt": ctx.attempt,
        "redelivered": ctx.redelivered,
    }
    ctx.emit(COMPLETED, done)
    return done


@pool.task(schema=None)
def noop(payload: object, ctx: TaskContext) -> None:
    """Does nothing and emits nothing: the benchmark's handler."""


@pool.task
def fail(payload: Fail, ctx: TaskContext) -> None:
    raise RetryableError(payload.message)


@pool.task
def refuse(payload: Fail, ctx: TaskContext) -> None:
    raise PermanentError(payload.message)


@pool.task
def crash(payload: Nothing, ctx: TaskContext) -> None:
    """End the whole worker process at once, as an out-of-memory kill or a segfault would: no
    cleanup, no ack. (Not SIGKILL to itself: as PID 1 of a container the kernel would ignore it.)"""
    os._exit(CRASH_EXIT_STATUS)
