"""What to do with a handled message: a pure function of (outcome, attempt, policy)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from warren.worker.deadletter import Reason


@dataclass(frozen=True, slots=True)
class Policy:
    max_attempts: int
    retry_delays_ms: tuple[int, ...]  # delay after failed attempt n is retry_delays_ms[n - 1]
    delivery_limit: int
    max_body_bytes: int

    def delay_after(self, attempt: int) -> int:
        """The delay before retrying failed attempt ``attempt`` (the last one repeats)."""
        return self.retry_delays_ms[min(attempt, len(self.retry_delays_ms)) - 1]

    def for_task(self, *, max_attempts: int | None, retry_delays_ms: tuple[int, ...] | None) -> Policy:
        """This policy with a task's own overrides."""
        if max_attempts is None and not retry_delays_ms:
            return self
        return replace(
            self,
            max_attempts=max_attempts or self.max_attempts,
            retry_delays_ms=retry_delays_ms or self.retry_delays_ms,
        )


@dataclass(frozen=True, slots=True)
class Succeeded:
    pass


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler raised; ``permanent`` when it said the task can never succeed."""

    error_class: str
    error_message: str
    permanent: bool = False
    delay_ms: int | None = None  # the handler asked for this retry delay (RetryableError(delay=...))


@dataclass(frozen=True, slots=True)
class BadInput:
    """The message could not be given to a handler at all."""

    reason: Reason
    error_class: str
    error_message: str


Outcome = Succeeded | Failed | BadInput


@dataclass(frozen=True, slots=True)
class Complete:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    delay_ms: int
    attempt: int  # the attempt that failed
    error_class: str
    error_message: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: Reason
    error_class: str | None
    error_message: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Defer:
    """Not due yet (a delayed retry longer than any delay tier): park it again, no attempt counted."""

    remaining_ms: int


@dataclass(frozen=True, slots=True)
class Isolate:
    """It was in flight when a worker died: move it to the pool's suspect queue, where messages
    run one at a time, so only a message that itself kills its worker is counted as a crash."""

    deaths: int  # deaths it has been part of so far, this one included


Action = Complete | Retry | DeadLetter | Defer | Isolate


def decide(outcome: Outcome, *, attempt: int, policy: Policy) -> Action:
    """``attempt`` counts from 1: the handler attempt this outcome belongs to."""
    match outcome:
        case Succeeded():
            return Complete()
        case BadInput(reason=reason, error_class=cls, error_message=msg):
            return DeadLetter(reason, cls, msg, attempts=attempt)
        case Failed(permanent=True, error_class=cls, error_message=msg):
            return DeadLetter(Reason.PERMANENT_FAILURE, cls, msg, attempts=attempt)
        case Failed(error_class=cls, error_message=msg, delay_ms=asked) if attempt < policy.max_attempts:
            return Retry(asked if asked is not None else policy.delay_after(attempt), attempt, cls, msg)
        case Failed(error_class=cls, error_message=msg):
            return DeadLetter(Reason.RETRIES_EXHAUSTED, cls, msg, attempts=attempt)
    raise TypeError(f"not an outcome: {outcome!r}")


def crash_loop(deaths: int, *, policy: Policy) -> bool:
    """True when ``delivery_limit`` earlier deliveries of this message ended without an ack.

    Handlers never requeue (retries go through delay queues), so a delivery that ended unacked
    means its worker died or lost its connection mid-task. Counted in the suspect queue, where a
    message runs alone, so every death counted is its own. The broker's ``x-delivery-limit`` is
    the same number, as a backstop should the worker die even while dead-lettering.
    """
    return deaths >= policy.delivery_limit
