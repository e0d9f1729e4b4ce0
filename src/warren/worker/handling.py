"""Handling one delivery, off the I/O thread: validate, run the handler, decide, build follow-ups.

Nothing here touches the connection: the result is a list of messages to publish (with confirms)
and whether to ack, which the I/O thread carries out in that order. ``warren.testing.run_task``
runs this same code without a broker.

A retry waits in the pool's delay queue whose delay is the longest not past the one asked for;
when the wait asked for is longer, the message carries its due time (``x-warren-due-at``) and is
parked again for what remains when it comes back, without counting an attempt.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from warren import topology
from warren.config import Settings
from warren.errors import PermanentError, RetryableError
from warren.messages import H_DUE_AT, Delivery, Outgoing, derived_id, encode_json
from warren.producer import task_message
from warren.topology import Names, PoolNames
from warren.worker import deadletter
from warren.worker.deadletter import Reason
from warren.worker.decision import (
    Action,
    BadInput,
    Complete,
    DeadLetter,
    Defer,
    Failed,
    Isolate,
    Outcome,
    Policy,
    Retry,
    Succeeded,
    crash_loop,
    decide,
)
from warren.worker.pool import Pool, TaskContext, task_logger

log = logging.getLogger("warren.worker")
task_log = logging.getLogger("warren.task")


@dataclass(frozen=True, slots=True)
class Result:
    delivery: Delivery
    action: Action
    publishes: tuple[Outgoing, ...]
    reply: Outgoing | None
    attempt: int
    task_type: str
    seconds: float
    returned: Any = None  # the handler's return value (the reply, if the message asked for one)


class Processor:
    """Turns one delivery into a ``Result``: what to publish, then whether to ack."""

    def __init__(self, pool: Pool, *, names: Names, pool_names: PoolNames, policy: Policy, worker: str) -> None:
        self.pool = pool
        self.worker = worker
        self.names = names
        self.pool_names = pool_names
        self.policy = policy

    @classmethod
    def for_settings(cls, pool: Pool, settings: Settings, *, worker: str) -> Processor:
        """The processor a worker of ``pool`` runs with these settings."""
        return cls(
            pool,
            names=Names(settings.namespace),
            pool_names=topology.pool_names(settings, pool.spec),
            policy=Policy(
                max_attempts=settings.retry_max_attempts,
                retry_delays_ms=settings.retry_delays_ms(),
                delivery_limit=settings.delivery_limit,
                max_body_bytes=settings.max_body_bytes,
            ),
            worker=worker,
        )

    def handle(self, delivery: Delivery, *, now_ms: int | None = None) -> Result:
        started = time.monotonic()
        failed_before = _int_header(delivery.headers.get(deadletter.H_ATTEMPT))
        attempt = failed_before + 1
        task_type = delivery.type or "?"
        ctx: TaskContext | None = None
        returned: Any = None
        policy = self.policy
        early: Action | None = None
        remaining = self._not_due_for(delivery, now_ms=now_ms if now_ms is not None else _now_ms())
        deaths_before = _int_header(delivery.headers.get(deadletter.H_DEATHS))
        if remaining:
            early = Defer(remaining)
        elif delivery.queue != self.pool_names.suspect_queue and (delivery.redelivered or delivery.delivery_count):
            early = Isolate(deaths_before + 1)
        if early is not None:
            publishes, reply = self.follow_ups(delivery, early)
            return Result(delivery, early, publishes, reply, failed_before, task_type, time.monotonic() - started)
        deaths = deaths_before + delivery.delivery_count
        if crash_loop(deaths, policy=self.policy):
            attempt = max(attempt, deaths)
            outcome: Outcome = BadInput(
                Reason.CRASH_LOOP,
                "WorkerDied",
                f"the worker died or lost its connection {deaths} times handling this message "
                "(counted where it ran alone)",
            )
        else:
            checked = self._check(delivery)
            if isinstance(checked, BadInput):
                outcome = checked
            else:
                spec, payload = checked
                policy = policy.for_task(max_attempts=spec.max_attempts, retry_delays_ms=spec.retry_delays_ms)
                # A message from a producer that set no id still gets one, so the ids derived
                # from it (events, follow-up tasks) never collide with another task's.
                task_id = delivery.message_id or f"anonymous-{uuid.uuid4().hex}"
                ctx = TaskContext(
                    task_id=task_id,
                    task_type=delivery.type or spec.name,
                    pool=self.pool.name,
                    attempt=attempt,
                    redelivered=delivery.redelivered or deaths > 0,  # from the suspect queue: a redo
                    correlation_id=delivery.correlation_id,
                    worker=self.worker,
                    logger=task_logger(task_log, task_id=task_id, correlation_id=delivery.correlation_id,
                                       pool=self.pool.name, task=delivery.type or spec.name, attempt=attempt),
                )
                outcome, returned = self._run(spec.handler, payload, ctx)
        action = decide(outcome, attempt=attempt, policy=policy)
        publishes, reply = self.follow_ups(delivery, action, ctx, returned)
        return Result(delivery, action, publishes, reply, attempt, task_type, time.monotonic() - started, returned)

    def internal_error(self, delivery: Delivery, error: BaseException) -> Result:
        """The result for a delivery Warren itself failed on (a bug): dead-lettered with the error,
        never left unacked, where it would hold a prefetch slot and stall whoever gets it next.
        If even its headers cannot be copied, the dead letter carries Warren's headers alone."""
        action = DeadLetter(
            Reason.INTERNAL_ERROR, type(error).__name__, str(error) or repr(error),
            attempts=_int_header(delivery.headers.get(deadletter.H_ATTEMPT)) + 1,
        )
        try:
            publishes, _ = self.follow_ups(delivery, action)
        except Exception:
            publishes, _ = self.follow_ups(replace(delivery, headers={}), action)
        return Result(delivery, action, publishes, None, action.attempts, delivery.type or "?", 0.0)

    def already_done(self, delivery: Delivery) -> Result:
        """The result for a redelivery of a message this worker completed, whose follow-ups were
        confirmed but whose ack was lost with its channel: ack it, do not run it again."""
        return Result(delivery, Complete(), (), None, 0, delivery.type or "?", 0.0)

    def _not_due_for(self, delivery: Delivery, *, now_ms: int) -> int:
        """How long a parked retry must still wait, in ms; 0 when it is due. Within half the
        shortest delay tier it counts as due: parking it again would make it later than early."""
        due_at = _int_or_none(delivery.headers.get(H_DUE_AT))
        if due_at is None:
            return 0
        remaining = due_at - now_ms
        shortest = self.pool_names.retry_queues[0][0] if self.pool_names.retry_queues else 0
        return remaining if remaining * 2 > shortest else 0

    def _check(self, delivery: Delivery) -> BadInput | tuple[Any, Any]:
        if delivery.header_problems:
            return BadInput(
                Reason.MALFORMED_HEADERS,
                "UndecodableHeader",
                "headers AMQP allows but Warren cannot read: " + "; ".join(delivery.header_problems),
            )
        if len(delivery.body) > self.policy.max_body_bytes:
            return BadInput(
                Reason.OVERSIZED_BODY,
                "OversizedBody",
                f"body is {len(delivery.body)} bytes; the limit is {self.policy.max_body_bytes}",
            )
        spec = self.pool.handler_for(delivery.type)
        if spec is None:
            known = ", ".join(sorted(self.pool.tasks)) or "none"
            what = f"no task {delivery.type!r}" if delivery.type else "a message without a type (the task's name)"
            return BadInput(Reason.UNKNOWN_TASK, "UnknownTask", f"pool {self.pool.name!r} got {what} (known: {known})")
        try:
            data = json.loads(delivery.body.decode("utf-8"))
        except UnicodeDecodeError as e:
            return BadInput(Reason.MALFORMED_BODY, type(e).__name__, f"body is not UTF-8: {e}")
        except json.JSONDecodeError as e:
            return BadInput(Reason.MALFORMED_BODY, type(e).__name__, f"body is not JSON: {e}")
        except RecursionError:
            return BadInput(Reason.MALFORMED_BODY, "RecursionError", "body is JSON nested too deeply to decode")
        if spec.schema is None:
            return spec, data
        try:
            return spec, spec.schema.model_validate(data)
        except ValidationError as e:
            return BadInput(Reason.SCHEMA_VIOLATION, "ValidationError", _summarise(e))
        except RecursionError:
            return BadInput(Reason.SCHEMA_VIOLATION, "RecursionError", "body is nested too deeply to validate")

    @staticmethod
    def _run(handler: Any, payload: Any, ctx: TaskContext) -> tuple[Outcome, Any]:
        try:
            returned = handler(payload, ctx)
        except PermanentError as e:
            return Failed(type(e).__name__, str(e), permanent=True), None
        except RetryableError as e:
            delay_ms = None if e.delay is None else round(e.delay * 1000)
            return Failed(type(e).__name__, str(e) or repr(e), delay_ms=delay_ms), None
        except Exception as e:  # any other failure is retried: the handler's own bug included
            log.debug("handler raised", exc_info=True)
            return Failed(type(e).__name__, str(e) or repr(e)), None
        return Succeeded(), returned

    def follow_ups(
        self, delivery: Delivery, action: Action, ctx: TaskContext | None = None, returned: Any = None
    ) -> tuple[tuple[Outgoing, ...], Outgoing | None]:
        """The messages that must be confirmed before ``delivery`` is acked, and the reply if any."""
        match action:
            case Complete():
                # Ids derive from the task's and the pool's (several pools handle one event), so a
                # redelivered task re-sends the same ids and readers can deduplicate; the
                # correlation id follows the whole chain.
                task_id = ctx.task_id if ctx else delivery.message_id or ""
                correlation_id = delivery.correlation_id or task_id
                events = tuple(
                    Outgoing(
                        exchange=self.names.events,
                        routing_key=event,
                        body=encode_json(data),
                        message_id=derived_id(task_id, f"{self.pool.name}.e{n}"),
                        type=event,
                        correlation_id=correlation_id,
                        headers={"x-warren-pool": self.pool.name},
                    )
                    for n, (event, data) in enumerate(ctx.events if ctx else (), start=1)
                )
                events += tuple(
                    task_message(self.names, pool, task_type, payload, message_id=mid, correlation_id=correlation_id)
                    for pool, task_type, payload, mid in (ctx.tasks if ctx else ())
                )
                reply = None
                if delivery.reply_to:
                    reply = Outgoing(
                        exchange="",
                        routing_key=delivery.reply_to,
                        body=encode_json(returned),
                        correlation_id=delivery.correlation_id or delivery.message_id,
                    )
                return events, reply
            case Retry(delay_ms=delay, attempt=attempt, error_class=cls, error_message=msg):
                headers = _cleaned(delivery.headers)
                headers[deadletter.H_ATTEMPT] = attempt
                headers[deadletter.H_HISTORY] = _history(delivery, attempt, (cls, msg))
                return (self._park(delivery, delay, headers, due_at_ms=_now_ms() + delay),), None
            case Defer(remaining_ms=remaining):
                headers = _cleaned(delivery.headers)
                due_at = _int_or_none(headers.get(H_DUE_AT))
                return (self._park(delivery, remaining, headers, due_at_ms=due_at or _now_ms() + remaining),), None
            case Isolate(deaths=deaths):
                headers = _cleaned(delivery.headers)
                headers[deadletter.H_DEATHS] = deaths
                suspect = self.pool_names.suspect_queue
                return (self._copy(delivery, exchange="", routing_key=suspect, headers=headers),), None
            case DeadLetter(reason=reason, error_class=cls, error_message=msg, attempts=attempts):
                headers = _cleaned(delivery.headers)
                headers.pop(H_DUE_AT, None)
                headers.update(
                    deadletter.headers_for(
                        reason=reason, error_class=cls, error_message=msg, attempts=attempts,
                        queue=self.pool_names.queue,
                    )
                )
                if cls is not None and reason in (Reason.RETRIES_EXHAUSTED, Reason.PERMANENT_FAILURE):
                    headers[deadletter.H_HISTORY] = _history(delivery, attempts, (cls, msg or ""))
                return (self._copy(delivery, exchange=self.names.dlx, routing_key=self.pool_names.queue,
                                   headers=headers),), None
        raise TypeError(action)

    def _park(self, delivery: Delivery, delay_ms: int, headers: dict[str, Any], *, due_at_ms: int) -> Outgoing:
        """The message in the delay queue that fits ``delay_ms``, with its due time when that
        queue's delay is shorter."""
        tier, queue = self.pool_names.retry_queue_for(delay_ms)
        if tier < delay_ms:
            headers[H_DUE_AT] = due_at_ms
        else:
            headers.pop(H_DUE_AT, None)
        return self._copy(delivery, exchange="", routing_key=queue, headers=headers)

    @staticmethod
    def _copy(delivery: Delivery, *, exchange: str, routing_key: str, headers: dict[str, Any]) -> Outgoing:
        return Outgoing(
            exchange=exchange,
            routing_key=routing_key,
            body=delivery.body,
            message_id=delivery.message_id or "",
            type=delivery.type,
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            headers=headers,
            content_type=delivery.content_type or "application/octet-stream",
            timestamp=delivery.timestamp or int(time.time()),
        )


_BROKER_HEADERS = ("x-delivery-count", "x-death", "x-first-death-reason", "x-first-death-queue",
                   "x-first-death-exchange", "x-last-death-reason", "x-last-death-queue", "x-last-death-exchange")


def _cleaned(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers to publish a copy of a message with: without the broker's own (it adds them
    again), and Warren's counts as the numbers they were read as (a forged one clamped)."""
    cleaned = {k: v for k, v in headers.items() if k not in _BROKER_HEADERS}
    for key in (deadletter.H_ATTEMPT, deadletter.H_DEATHS):
        if key in cleaned:
            cleaned[key] = _int_header(cleaned[key])
    return cleaned


def _history(delivery: Delivery, attempt: int, error: tuple[str, str]) -> list[dict[str, Any]]:
    history = delivery.headers.get(deadletter.H_HISTORY)
    entries = list(history) if isinstance(history, list) else []
    entries.append({"attempt": attempt, "at_ms": int(time.time() * 1000), "error": f"{error[0]}: {error[1]}"[:300]})
    return entries


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _now_ms() -> int:
    return int(time.time() * 1000)


MAX_COUNT_HEADER = 1_000_000  # a count header beyond this is forged or corrupt


def _int_header(value: Any) -> int:
    """A count carried in a header: 0 unless a non-negative integer, and never so large that
    adding one overflows AMQP's 64-bit integers on the way back out."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, MAX_COUNT_HEADER)


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(body)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
