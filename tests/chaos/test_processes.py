"""Chaos against real worker processes and a real broker: kills, signals, restarts, poison.

Every test accounts for every message through the ledger: completed, dead-lettered with a reason,
duplicated, lost; lost is always zero and the dead-letter count is exact.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from warren.errors import WarrenError
from warren.producer import Producer, task_message
from warren.topology import Names

pytestmark = [pytest.mark.broker, pytest.mark.chaos]


def test_sigkill_mid_task_is_redelivered_to_another_worker_and_completed(rig) -> None:
    doomed, task = rig.busy_worker(3000, "doomed")
    survivor = rig.worker("survivor")

    doomed.kill()
    report = rig.account([task], timeout=30)

    assert (report.completed, report.dead_lettered, report.duplicates, report.lost) == (1, 0, 0, 0)
    [event] = rig.ledger.events[task]
    assert event["worker"].endswith(f":{survivor.proc.pid}")
    assert event["redelivered"] is True


def test_workers_killed_at_random_under_load_lose_nothing(rig) -> None:
    rig.apply_topology()
    for _ in range(3):
        rig.worker(WARREN_PREFETCH="4")
    names = Names(rig.settings.namespace)
    tasks = [task_message(names, "selftest", "work", {"ms": 30}) for _ in range(300)]
    rig.producer.publish_batch(tasks)

    kills = 0
    for victim in list(rig.workers)[:2]:  # kill two of three while they hold work, replace each
        rig.ledger.wait([t.message_id for t in tasks[: 80 * (kills + 1)]], timeout=30)
        victim.kill()
        kills += 1
        rig.worker(WARREN_PREFETCH="4")
    report = rig.account([t.message_id for t in tasks], timeout=90)

    assert kills == 2
    assert (report.completed, report.dead_lettered, report.lost) == (300, 0, 0)
    # A kill between publishing a completion and acking it shows up here, never as a loss.
    assert report.duplicates <= 2 * 4


def test_a_poison_message_that_kills_every_worker_ends_in_the_dead_letter_queue(rig) -> None:
    rig.apply_topology()  # delivery limit 3
    poison = rig.producer.publish("selftest", "crash", {})
    good = [rig.producer.publish("selftest", "work", {"ms": 1}) for _ in range(5)]

    deaths = 0
    worker = rig.worker(ready=False)
    deadline = time.monotonic() + 60
    while not rig.ledger.settled([poison, *good]) and time.monotonic() < deadline:
        if not worker.alive():  # Kubernetes would restart the pod; so does this loop
            deaths += 1
            worker = rig.worker(ready=False)
        rig.ledger.collect()
        time.sleep(0.05)
    report = rig.account([poison, *good], timeout=10)

    assert (report.completed, report.dead_lettered, report.lost) == (5, 1, 0)
    info = rig.ledger.dead[poison]
    assert (info.reason, info.error_class, info.attempts) == ("crash_loop", "WorkerDied", 3)
    assert deaths == 3  # exactly the delivery limit: then it stops taking workers down
    assert worker.alive()


def test_broker_restart_under_load_loses_nothing_and_workers_recover_by_themselves(rig, broker) -> None:
    rig.apply_topology()
    workers = [rig.worker(WARREN_PREFETCH="10") for _ in range(2)]
    names = Names(rig.settings.namespace)
    tasks = [task_message(names, "selftest", "work", {"ms": 2}) for _ in range(2000)]
    halfway, broker_down = threading.Event(), threading.Event()
    publish_errors: list[str] = []

    def publish_all() -> None:
        producer = Producer(rig.settings, name="test-load")
        for start in range(0, len(tasks), 50):
            if start == 600:
                halfway.set()
                broker_down.wait(timeout=60)  # the rest is published into the outage
            batch = tasks[start : start + 50]
            deadline = time.monotonic() + 90
            while True:
                try:  # a batch not fully confirmed is sent again: duplicates, never losses
                    producer.publish_batch(batch)
                    break
                except WarrenError as e:
                    publish_errors.append(str(e))
                    assert time.monotonic() < deadline, "broker did not come back"
                    time.sleep(0.2)
        producer.close()

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    assert halfway.wait(timeout=30)
    broker.stop()
    broker_down.set()
    deadline = time.monotonic() + 30
    while not publish_errors and time.monotonic() < deadline:
        time.sleep(0.05)
    broker.start()
    publisher.join(timeout=120)
    report = rig.account([t.message_id for t in tasks], timeout=120, quiet_for=1.0)

    assert not publisher.is_alive()
    assert publish_errors, "publishing never met the outage: the test proved nothing"
    assert (report.completed, report.dead_lettered, report.lost) == (2000, 0, 0)
    for w in workers:
        assert w.alive()
        assert "broker connection lost" in w.log()
        assert w.log().count(" consuming ") >= 2  # reconnected and resumed in the same process


def test_a_task_longer_than_three_heartbeats_completes_on_the_same_connection(rig) -> None:
    rig.configure(WARREN_HEARTBEAT="1")
    rig.apply_topology()
    worker = rig.worker()
    task = rig.producer.publish("selftest", "work", {"ms": 4500})

    report = rig.account([task], timeout=30, quiet_for=1.0)

    assert (report.completed, report.duplicates, report.lost) == (1, 0, 0)
    assert rig.ledger.events[task][0]["redelivered"] is False
    assert "broker connection lost" not in worker.log()
    assert worker.log().count(" consuming ") == 1


def test_sigterm_mid_task_finishes_acks_and_exits_0_without_redelivery(rig) -> None:
    worker, task = rig.busy_worker(2000)

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=rig.settings.shutdown_grace + 5) == 0
    report = rig.account([task], timeout=10, quiet_for=0.5)

    assert (report.completed, report.duplicates, report.lost) == (1, 0, 0)
    assert rig.ledger.events[task][0]["redelivered"] is False
    assert rig.queue_ready(rig.work_queue) == 0  # acked, not handed back for redelivery
    assert "SIGTERM: draining 1 task(s) in flight" in worker.log()


def test_a_second_sigterm_exits_at_once_and_the_task_is_redelivered_not_lost(rig) -> None:
    worker, task = rig.busy_worker(4000)

    worker.signal(signal.SIGTERM)
    worker.wait_for_log("draining")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=3) == 130
    rig.worker("successor")
    report = rig.account([task], timeout=30)

    assert (report.completed, report.duplicates, report.lost) == (1, 0, 0)
    assert rig.ledger.events[task][0]["redelivered"] is True
