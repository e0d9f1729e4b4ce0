"""Pools: a work queue and the typed tasks that serve it.

A module builds one ``Pool`` and registers its tasks; the decorator returns a ``Task`` handle that
producers send with::

    pool = Pool("payments")

    @pool.task(max_attempts=3)
    def charge(payload: Charge, ctx: TaskContext) -> None:   # task "charge", schema Charge
        ctx.emit("payment.completed", {"order_id": payload.order_id})

    producer.send(charge, Charge(order_id="o-1", cents=500))

The task type travels in the AMQP ``type`` property; the body is the JSON payload. An event routed
into the pool's queue arrives with its event name as the type (``@pool.task("stock.reserved")``).
A task registered as ``"*"`` takes every type that has no task of its own.

Pools are found by name through the ``warren.pools`` entry point group (how pytest and Celery find
plugins), or as ``package.module:attribute``: the runtime never names a workload.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel

from warren.errors import ConfigError
from warren.messages import derived_id
from warren.topology import PoolSpec, Subscription

P = TypeVar("P")
Handler = Callable[[Any, "TaskContext"], Any]
ENTRY_POINT_GROUP = "warren.pools"


class _Infer:
    """The default of ``schema``: take it from the handler's payload annotation."""

    def __repr__(self) -> str:
        return "<from the annotation>"


_INFER: Any = _Infer()


@dataclass(frozen=True, slots=True)
class Task(Generic[P]):
    """A registered task: what a worker runs, and the handle a producer sends it with.

    Calling it calls the handler, so a handler stays an ordinary, directly testable function.
    """

    pool: str
    name: str
    handler: Callable[[P, TaskContext], Any]
    schema: type[BaseModel] | None
    max_attempts: int | None = None  # None: the pool's WARREN_RETRY_MAX_ATTEMPTS
    retry_delays_ms: tuple[int, ...] | None = None  # None: the pool's backoff settings

    def __call__(self, payload: P, ctx: TaskContext) -> Any:
        return self.handler(payload, ctx)

    def validate(self, payload: Any) -> Any:
        """The payload as the handler will see it; raises pydantic's ValidationError if it does not
        fit the schema, so a producer finds out before anything is published."""
        if self.schema is None or isinstance(payload, self.schema):
            return payload
        return self.schema.model_validate(payload)


@dataclass(frozen=True)
class TaskContext:
    """What a handler knows about the message it handles, and how it emits events and tasks.

    ``logger`` adds the task id and correlation id to every line the handler logs.
    """

    task_id: str
    task_type: str
    pool: str
    attempt: int
    redelivered: bool  # it may have run before: a worker died holding it (or its connection was lost)
    correlation_id: str | None
    worker: str
    logger: logging.LoggerAdapter[logging.Logger] = field(repr=False)
    events: list[tuple[str, Any]] = field(default_factory=list, repr=False)
    tasks: list[tuple[str, str, Any, str]] = field(default_factory=list, repr=False)  # pool, type, payload, id

    def emit(self, event: str, data: Any) -> None:
        """Publish ``data`` as event ``event`` once the handler has returned successfully.

        Events are published with confirms before the task is acked, so an acked task's events are
        never lost; a failed handler's events are never published.
        """
        self.events.append((event, data))

    def send(self, task: Task[P], payload: P | Mapping[str, Any], *, message_id: str | None = None) -> None:
        """Enqueue ``task`` once the handler has returned successfully (confirmed before this task
        is acked). The payload is validated now, against the task's schema."""
        self.send_to(task.pool, task.name, task.validate(payload), message_id=message_id)

    def send_to(self, pool: str, task_type: str, payload: Any, *, message_id: str | None = None) -> None:
        """``send`` by name, for a task whose module this one does not import. The default message
        id derives from this task's id and pool, so a redelivered task sends the same ids again and
        the receiver can deduplicate."""
        message_id = message_id or derived_id(self.task_id, f"{self.pool}.t{len(self.tasks) + 1}")
        self.tasks.append((pool, task_type, payload, message_id))


def task_logger(
    logger: logging.Logger, *, task_id: str, correlation_id: str | None, pool: str | None = None,
    task: str | None = None, attempt: int | None = None,
) -> logging.LoggerAdapter[Any]:
    """``logger`` with ``task_id`` and ``correlation_id`` on every record (as attributes, for
    structured formatters, and as a prefix of the message, for plain ones), and the fields of
    ``warren.logs``' JSON lines: the task's pool, type and attempt, and how long it has run."""
    return _TaskLogger(logger, {"task_id": task_id, "correlation_id": correlation_id or task_id, "pool": pool,
                                "task": task, "attempt": attempt, "started": time.monotonic()})


class _TaskLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        prefix = f"[task {extra['task_id']} correlation {extra['correlation_id']}] "
        fields = {
            "message_id": extra["task_id"], "correlation_id": extra["correlation_id"], "pool": extra.get("pool"),
            "task": extra.get("task"), "attempt": extra.get("attempt"), "outcome": "running",
            "duration_ms": round((time.monotonic() - float(extra["started"])) * 1000, 1),  # type: ignore[arg-type]
        }
        kwargs["extra"] = {"task_id": extra["task_id"], "correlation_id": extra["correlation_id"],
                           "warren": fields, "task_prefix": prefix, **kwargs.get("extra", {})}
        return f"{prefix}{msg}", kwargs


class Pool:
    """A named work queue, the tasks it serves, and which events it takes as tasks."""

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
        self.description = description
        self._events = events
        self._all_events = all_events
        self._collectors = collectors
        self._tasks: dict[str, Task[Any]] = {}

    def __repr__(self) -> str:
        return f"Pool({self.name!r}, tasks={sorted(self._tasks)})"

    @property
    def spec(self) -> PoolSpec:
        """What the topology needs: the name, the events routed in, and every retry delay a task
        of this pool asks for beyond the settings' own."""
        delays = sorted({d for t in self._tasks.values() for d in (t.retry_delays_ms or ())})
        return PoolSpec(
            self.name, events=self._events, all_events=self._all_events, collectors=self._collectors,
            retry_delays_ms=tuple(delays),
        )

    @property
    def tasks(self) -> Mapping[str, Task[Any]]:
        return self._tasks

    def handler_for(self, task_type: str | None) -> Task[Any] | None:
        return self._tasks.get(task_type or "") or self._tasks.get("*")

    @overload
    def task(self, fn: Callable[[P, TaskContext], Any], /) -> Task[P]: ...

    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        schema: type[BaseModel] | None = ...,
        max_attempts: int | None = None,
        retry_delays: Sequence[float] | None = None,
    ) -> Callable[[Callable[[Any, TaskContext], Any]], Task[Any]]: ...

    def task(
        self,
        fn_or_name: Callable[[Any, TaskContext], Any] | str | None = None,
        /,
        *,
        schema: type[BaseModel] | None = _INFER,
        max_attempts: int | None = None,
        retry_delays: Sequence[float] | None = None,
    ) -> Any:
        """Register a handler ``(payload, ctx)``. The task's name is the function's unless given;
        its schema is the payload parameter's annotation when that is a pydantic model (``schema=``
        overrides, ``None`` takes the decoded JSON as it is). ``max_attempts`` and
        ``retry_delays`` (seconds after the first, second, ... failed attempt) override the pool's
        settings for this task. Stacking two decorators registers one handler under two names."""
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        delays_ms = None if retry_delays is None else tuple(max(1, round(s * 1000)) for s in retry_delays)

        def register(fn: Callable[[Any, TaskContext], Any] | Task[Any]) -> Task[Any]:
            handler = fn.handler if isinstance(fn, Task) else fn
            name = fn_or_name if isinstance(fn_or_name, str) else handler.__name__
            if name in self._tasks:
                raise ValueError(f"pool {self.name!r} already has a task {name!r}")
            task = Task(
                pool=self.name,
                name=name,
                handler=handler,
                schema=_schema_of(handler) if schema is _INFER else schema,
                max_attempts=max_attempts,
                retry_delays_ms=delays_ms,
            )
            self._tasks[name] = task
            return task

        if callable(fn_or_name) and not isinstance(fn_or_name, str):
            return register(fn_or_name)
        return register


def _schema_of(handler: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model annotating the handler's first parameter, if it is one."""
    parameters = list(inspect.signature(handler).parameters)
    if not parameters:
        raise TypeError(f"handler {handler.__name__} must take (payload, ctx)")
    try:
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError):  # an annotation that cannot be resolved: no schema from it
        return None
    hint = hints.get(parameters[0])
    return hint if inspect.isclass(hint) and issubclass(hint, BaseModel) else None


def registered_pools() -> dict[str, str]:
    """Pools installed packages offer through the ``warren.pools`` entry points: name -> target."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_pool(spec: str) -> Pool:
    """A pool by its entry-point name, or ``module:attribute`` naming a Pool object."""
    target = registered_pools().get(spec, spec)
    module_name, _, attribute = target.partition(":")
    if not attribute:
        known = ", ".join(sorted(registered_pools())) or "none installed"
        raise ConfigError(f"unknown pool {spec!r}: use an installed pool ({known}) or 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"pool {spec!r}: cannot import {module_name!r}: {e}") from None
    pool = getattr(module, attribute, None)
    if not isinstance(pool, Pool):
        raise ConfigError(f"pool {spec!r}: {target!r} is not a warren Pool")
    return pool
