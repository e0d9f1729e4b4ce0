"""Pools: a work queue and the typed task handlers that serve it.

A role module builds one ``Pool`` and registers handlers on it::

    pool = Pool("payments", events=("stock.reserved",))

    @pool.task("stock.reserved", schema=Reserved)
    def charge(payload: Reserved, ctx: TaskContext) -> None:
        ctx.emit("payment.completed", {"order_id": payload.order_id})

The task type travels in the AMQP ``type`` property; the body is the JSON payload. An event routed
into the pool's queue arrives with its event name as the type. A handler registered as ``"*"``
takes every type that has no handler of its own.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from warren.errors import ConfigError
from warren.topology import PoolSpec, Subscription

Handler = Callable[[Any, "TaskContext"], Any]

# Built-in pools, by name; a user's own pool is named as "package.module:attribute".
BUILTIN_POOLS: dict[str, str] = {
    "selftest": "warren.roles.selftest:pool",
    "orders": "warren.roles.orders:pool",
    "inventory": "warren.roles.inventory:pool",
    "payments": "warren.roles.payments:pool",
    "shipping": "warren.roles.shipping:pool",
    "email": "warren.roles.notifications:email",
    "sms": "warren.roles.notifications:sms",
    "analytics": "warren.roles.analytics:pool",
    "audit": "warren.roles.audit:pool",
}


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    handler: Handler
    schema: type[BaseModel] | None


@dataclass
class TaskContext:
    """What a handler knows about the message it handles, and how it emits events."""

    task_id: str
    task_type: str
    pool: str
    attempt: int
    redelivered: bool
    correlation_id: str | None
    logger: logging.Logger
    worker: str
    events: list[tuple[str, Any]] = field(default_factory=list)
    tasks: list[tuple[str, str, Any, str]] = field(default_factory=list)  # pool, type, payload, message id

    def emit(self, event: str, data: Any) -> None:
        """Publish ``data`` as event ``event`` once the handler has returned successfully.

        Events are published with confirms before the task is acked, so an acked task's events are
        never lost; a failed handler's events are never published.
        """
        self.events.append((event, data))

    def send(self, pool: str, task_type: str, payload: Any, *, message_id: str | None = None) -> None:
        """Enqueue a task for ``pool`` once the handler has returned successfully (confirmed
        before this task is acked). The default message id is derived from this task's id, so a
        redelivered task sends the same ids again and the receiver can deduplicate (the pool's
        name is part of it: several pools may handle the same event)."""
        message_id = message_id or f"{self.task_id}/{self.pool}.t{len(self.tasks) + 1}"
        self.tasks.append((pool, task_type, payload, message_id))


class Pool:
    def __init__(
        self,
        name: str,
        *,
        events: tuple[str, ...] = (),
        all_events: bool = False,
        collectors: tuple[Subscription, ...] = (),
        description: str = "",
    ) -> None:
        self.name = name
        self.spec = PoolSpec(name, events=events, all_events=all_events, collectors=collectors)
        self.description = description
        self._tasks: dict[str, TaskSpec] = {}

    @property
    def tasks(self) -> Mapping[str, TaskSpec]:
        return self._tasks

    def handler_for(self, task_type: str | None) -> TaskSpec | None:
        return self._tasks.get(task_type or "") or self._tasks.get("*")

    def task(self, name: str, *, schema: type[BaseModel] | None = None) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if name in self._tasks:
                raise ValueError(f"pool {self.name!r} already has a task {name!r}")
            self._tasks[name] = TaskSpec(name=name, handler=handler, schema=schema)
            return handler

        return register


def load_pool(spec: str) -> Pool:
    """A built-in pool by name, or ``module:attribute`` naming a Pool object."""
    target = BUILTIN_POOLS.get(spec, spec)
    module_name, _, attribute = target.partition(":")
    if not attribute:
        known = ", ".join(sorted(BUILTIN_POOLS))
        raise ConfigError(f"unknown pool {spec!r}: use one of {known} or 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"pool {spec!r}: cannot import {module_name!r}: {e}") from None
    pool = getattr(module, attribute, None)
    if not isinstance(pool, Pool):
        raise ConfigError(f"pool {spec!r}: {target!r} is not a warren Pool")
    return pool
