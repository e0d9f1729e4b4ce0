"""The ack / retry / dead-letter decision: a pure function, specified by a table and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren.worker.deadletter import Reason
from warren.worker.decision import (
    BadInput,
    Complete,
    DeadLetter,
    Failed,
    Policy,
    Retry,
    Succeeded,
    crash_loop,
    decide,
)

POLICY = Policy(max_attempts=3, retry_delays_ms=(100, 200), delivery_limit=4, max_body_bytes=1024)


@pytest.mark.parametrize(
    ("outcome", "attempt", "expected"),
    [
        # success is acked, whatever the attempt
        (Succeeded(), 1, Complete()),
        (Succeeded(), 3, Complete()),
        # a transient failure waits the delay of its attempt
        (Failed("E", "boom"), 1, Retry(100, 1, "E", "boom")),
        (Failed("E", "boom"), 2, Retry(200, 2, "E", "boom")),
        # the last attempt's failure is dead-lettered with its error
        (Failed("E", "boom"), 3, DeadLetter(Reason.RETRIES_EXHAUSTED, "E", "boom", 3)),
        # a permanent failure is never retried
        (Failed("E", "no", permanent=True), 1, DeadLetter(Reason.PERMANENT_FAILURE, "E", "no", 1)),
        # bad input is dead-lettered at once with its own reason
        (
            BadInput(Reason.MALFORMED_BODY, "JSONDecodeError", "x"),
            1,
            DeadLetter(Reason.MALFORMED_BODY, "JSONDecodeError", "x", 1),
        ),
        (BadInput(Reason.UNKNOWN_TASK, "UnknownTask", "x"), 1, DeadLetter(Reason.UNKNOWN_TASK, "UnknownTask", "x", 1)),
    ],
)
def test_decision_table(outcome, attempt, expected) -> None:
    assert decide(outcome, attempt=attempt, policy=POLICY) == expected


@given(
    max_attempts=st.integers(1, 20),
    attempt=st.integers(1, 20),
    permanent=st.booleans(),
)
def test_a_failure_is_retried_exactly_while_attempts_remain(max_attempts, attempt, permanent) -> None:
    attempt = min(attempt, max_attempts)
    policy = Policy(max_attempts, tuple(range(1, max_attempts)), delivery_limit=5, max_body_bytes=1)
    action = decide(Failed("E", "m", permanent=permanent), attempt=attempt, policy=policy)
    if permanent or attempt == max_attempts:
        assert isinstance(action, DeadLetter)
    else:
        assert action == Retry(policy.retry_delays_ms[attempt - 1], attempt, "E", "m")


@pytest.mark.parametrize(("count", "expected"), [(0, False), (3, False), (4, True), (9, True)])
def test_crash_loop_after_the_delivery_limit(count, expected) -> None:
    assert crash_loop(count, policy=POLICY) is expected
