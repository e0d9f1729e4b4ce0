"""Small parts of the worker runtime that need no broker."""

from __future__ import annotations

import itertools
import os
import random

from hypothesis import given
from hypothesis import strategies as st

from warren.worker.runtime import HealthFile, backoff_delays


@given(initial=st.floats(0.01, 5), cap=st.floats(5, 120), seed=st.integers(0, 2**32))
def test_reconnect_delays_grow_are_jittered_and_never_exceed_the_cap(initial, cap, seed) -> None:
    delays = list(itertools.islice(backoff_delays(initial, cap, rng=random.Random(seed)), 40))
    assert all(initial / 2 <= d <= cap for d in delays)
    upper_bounds = [min(cap, initial * 2**n) for n in range(40)]
    assert all(d <= bound for d, bound in zip(delays, upper_bounds, strict=True))


def test_reconnect_delays_differ_between_workers() -> None:
    a = list(itertools.islice(backoff_delays(0.5, 30, rng=random.Random(1)), 5))
    b = list(itertools.islice(backoff_delays(0.5, 30, rng=random.Random(2)), 5))
    assert a != b


def test_health_file_exists_only_while_ready_and_its_age_shows_liveness(tmp_path) -> None:
    path = tmp_path / "health"
    health = HealthFile(path)
    health.ready()
    assert path.read_text() == f"{os.getpid()}\n"
    os.utime(path, (0, 0))
    health._touched -= HealthFile.REFRESH_SECONDS  # as if the refresh interval had passed
    health.alive()
    assert path.stat().st_mtime > 0
    health.not_ready()
    assert not path.exists()


class _RecordingSession:
    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []
        self.acks_by_channel: list[tuple[int, int, bool]] = []

    def ack(self, tag: int, *, multiple: bool = False, channel: int = 0) -> None:
        self.acks.append((tag, multiple))
        self.acks_by_channel.append((channel, tag, multiple))


def test_acks_are_coalesced_only_below_the_oldest_task_still_running() -> None:
    from warren.config import Settings
    from warren.testing.selftest import pool
    from warren.worker.runtime import Worker

    worker = Worker(pool, Settings(_env_file=None, prefetch=5))
    session = _RecordingSession()
    worker._session = session  # type: ignore[assignment]
    worker._flight.in_flight.update({(0, tag): 0.0 for tag in (1, 2, 3, 4, 5)})

    worker._ack([(0, 1), (0, 2), (0, 4)])  # 3 still runs: 1-2 in one frame, 4 alone
    worker._ack([(0, 3)])  # now 1-4 are settled: one multiple ack reaches 3 (4 is already acked)
    worker._ack([(0, 5)])

    assert session.acks == [(2, True), (4, False), (3, True), (5, True)]
    assert not worker._flight.in_flight


def test_acks_are_coalesced_per_channel_since_delivery_tags_are() -> None:
    from warren.config import Settings
    from warren.testing.selftest import pool
    from warren.worker.runtime import Worker

    worker = Worker(pool, Settings(_env_file=None, prefetch=5))
    session = _RecordingSession()
    worker._session = session  # type: ignore[assignment]
    # the work queue's channel 0 has tags 1-3 in flight; the suspect queue's channel 1 has its own tag 1
    worker._flight.in_flight.update({(0, 1): 0.0, (0, 2): 0.0, (1, 1): 0.0, (0, 3): 0.0})

    worker._ack([(1, 1), (0, 2)])  # tag 1 of channel 0 still runs: 2 alone; channel 1 all settled
    worker._ack([(0, 1), (0, 3)])

    assert session.acks_by_channel == [(0, 2, False), (1, 1, True), (0, 3, True)]


def _worker(**settings: object):
    from warren.config import Settings
    from warren.testing.selftest import pool
    from warren.worker.runtime import Worker

    return Worker(pool, Settings(_env_file=None, **settings))


def _delivery(**fields: object):
    from warren.messages import Delivery

    return Delivery(**{"delivery_tag": 7, "redelivered": False, "exchange": "", "routing_key": "selftest",
                       "body": b"{}", "message_id": "m-1", "type": "work", **fields})


def test_an_internal_error_dead_letters_the_message_instead_of_holding_it_unacked(monkeypatch) -> None:
    from warren.worker.decision import DeadLetter

    worker = _worker()

    def broken(delivery, **_):  # stands for a bug in Warren's own handling
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(worker.processor, "handle", broken)
    worker._work(worker._flight.generation, _delivery(headers={"x-custom": "kept"}))
    _, result = worker._results.get_nowait()
    assert isinstance(result.action, DeadLetter) and result.action.reason == "internal_error"
    [dead_letter] = result.publishes
    assert dead_letter.exchange.endswith(".dlx") and dead_letter.headers["x-custom"] == "kept"
    assert dead_letter.headers["x-warren-error-class"] == "RecursionError"


def test_when_even_the_dead_letter_cannot_be_built_the_message_is_rejected_into_the_dlx(monkeypatch) -> None:
    from warren.worker.runtime import _Reject

    worker = _worker()
    monkeypatch.setattr(worker.processor, "handle", lambda d, **_: 1 / 0)
    monkeypatch.setattr(worker.processor, "internal_error", lambda d, e: 1 / 0)
    worker._work(worker._flight.generation, _delivery())
    _, result = worker._results.get_nowait()
    assert isinstance(result, _Reject)


def test_a_task_running_far_past_the_pools_longest_makes_the_worker_unhealthy() -> None:
    import time

    worker = _worker(max_task_seconds=2)
    worker._flight.in_flight[(0, 1)] = time.monotonic() - 5  # within 3 x 2 s: fine
    assert not worker._stuck()
    worker._flight.in_flight[(0, 2)] = time.monotonic() - 7  # past it: stuck
    assert worker._stuck()
    del worker._flight.in_flight[(0, 2)]
    assert not worker._stuck()  # healthy again once it ends
    assert _worker()._stuck() is False  # no limit configured: never


def test_the_broker_is_asked_not_to_time_out_deliveries_before_a_stuck_task_would() -> None:
    assert _worker(max_task_seconds=20).consumer_arguments == {"x-consumer-timeout": 120_000}
    assert _worker().consumer_arguments == {}


def test_a_workers_connection_is_never_torn_down_for_being_blocked_but_a_producers_is() -> None:
    from warren.broker.session import connection_parameters
    from warren.config import Settings

    settings = Settings(_env_file=None)
    assert connection_parameters(settings, name="worker")[0].blocked_connection_timeout is None
    assert connection_parameters(settings, name="api", blocked_timeout=5)[0].blocked_connection_timeout == 5


def test_a_redelivery_of_a_task_completed_on_a_lost_connection_is_acked_not_run_again(monkeypatch) -> None:
    from warren.worker.decision import Complete

    worker = _worker()
    worker._remember_done("m-1")
    ran: list[object] = []
    monkeypatch.setattr(worker._executor, "submit", lambda *a: ran.append(a))
    worker._dispatch(_delivery(redelivered=True))
    _, result = worker._results.get_nowait()
    assert isinstance(result.action, Complete) and result.publishes == () and not ran
    worker._dispatch(_delivery(redelivered=False, message_id="m-2"))
    assert ran  # anything else runs


def test_a_wake_up_lost_with_its_connection_does_not_slow_the_next_one(monkeypatch) -> None:
    """A result finished just as the connection died: its wake-up was never run. The flag it set
    must not outlive the connection, or every later result waits for the I/O loop's 0.2 s poll."""
    import pytest

    from warren.errors import BrokerUnavailable
    from warren.worker import runtime

    class DeadOnArrival:
        def call_soon_threadsafe(self, _callback: object) -> None:
            raise BrokerUnavailable("connection closed")

        def declare_exchange(self, *_: object) -> None:
            raise BrokerUnavailable("connection closed")

        def close(self) -> None:
            pass

    worker = _worker()
    worker._session = DeadOnArrival()  # type: ignore[assignment]
    worker._deliver_result(worker._flight.generation, object())  # type: ignore[arg-type]
    assert worker._wakeup_pending.is_set()  # scheduled on a connection that is gone

    monkeypatch.setattr(runtime.Session, "open", classmethod(lambda cls, *a, **k: DeadOnArrival()))
    with pytest.raises(BrokerUnavailable):
        worker._serve()  # the next connection (here failing at once, as after a restart)
    assert not worker._wakeup_pending.is_set()


class _NackingSession:
    """A broker that nacks the first ``nacks`` publishes (a quorum queue electing a new leader)."""

    def __init__(self, nacks: int) -> None:
        self.nacks = nacks
        self.published: list[object] = []
        self.waited = 0.0

    def publish(self, message: object, *, mandatory: bool = True) -> None:
        from warren.errors import Nacked

        if self.nacks:
            self.nacks -= 1
            raise Nacked("publishing to (default)/ns.p.suspect: the broker refused the message")
        self.published.append(message)

    def run(self, seconds: float) -> None:
        import time

        time.sleep(seconds)  # as the real one processes events for that long
        self.waited += seconds


def test_a_follow_up_the_broker_nacks_for_a_while_is_published_again_not_dead_lettered() -> None:
    """The cluster scenario that killed a leader once dead-lettered a task as `rejected`: the move
    to the suspect queue and then its retry were both nacked while their queues had no leader."""
    import pytest

    from warren.config import Settings
    from warren.errors import Nacked
    from warren.messages import Outgoing
    from warren.testing.selftest import pool
    from warren.worker.runtime import Worker

    message = Outgoing(exchange="", routing_key="ns.selftest.suspect", body=b"{}")
    worker = Worker(pool, Settings(_env_file=None, publish_timeout=5))
    session = _NackingSession(nacks=3)
    worker._publish(session, message)  # type: ignore[arg-type]
    assert session.published == [message] and session.waited == 0.75  # events processed between tries

    worker = Worker(pool, Settings(_env_file=None, publish_timeout=0.01))
    session = _NackingSession(nacks=1_000)
    with pytest.raises(Nacked):  # past WARREN_PUBLISH_TIMEOUT it is a refusal, as before
        worker._publish(session, message)  # type: ignore[arg-type]
    assert not session.published
