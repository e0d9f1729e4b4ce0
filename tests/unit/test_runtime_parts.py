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

    def ack(self, tag: int, *, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))


def test_acks_are_coalesced_only_below_the_oldest_task_still_running() -> None:
    from warren.config import Settings
    from warren.testing.selftest import pool
    from warren.worker.runtime import Worker

    worker = Worker(pool, Settings(_env_file=None, prefetch=5))
    session = _RecordingSession()
    worker._session = session  # type: ignore[assignment]
    worker._flight.in_flight.update({tag: 0.0 for tag in (1, 2, 3, 4, 5)})

    worker._ack([1, 2, 4])  # 3 still runs: 1-2 in one frame, 4 alone
    worker._ack([3])  # now 1-4 are settled: one multiple ack reaches 3 (4 is already acked)
    worker._ack([5])

    assert session.acks == [(2, True), (4, False), (3, True), (5, True)]
    assert not worker._flight.in_flight
