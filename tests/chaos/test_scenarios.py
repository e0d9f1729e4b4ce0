"""Chaos scenarios, written once and run on every platform (processes, Docker containers):
kills, signals, broker restarts, poison.

Every test accounts for every message through the ledger: completed, dead-lettered with a reason,
duplicated, lost; lost is always zero and the dead-letter count is exact.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.chaos.platforms import wait_for_log
from warren.errors import WarrenError
from warren.producer import Producer, task_message
from warren.topology import Names

pytestmark = [pytest.mark.broker, pytest.mark.chaos]


def test_sigkill_mid_task_is_redelivered_to_another_worker_and_completed(chaos_rig) -> None:
    doomed, task = chaos_rig.busy_worker(3000, "doomed")
    survivor = chaos_rig.worker("survivor")

    doomed.kill()
    report = chaos_rig.account([task], timeout=30)

    assert (report.completed, report.dead_lettered, report.duplicates, report.lost) == (1, 0, 0, 0)
    [event] = chaos_rig.ledger.events[task]
    assert event["worker"] == survivor.ident
    assert event["redelivered"] is True


def test_workers_killed_at_random_under_load_lose_nothing(chaos_rig) -> None:
    chaos_rig.apply_topology()
    chaos_rig.scale(3, WARREN_PREFETCH="4")
    names = Names(chaos_rig.settings.namespace)
    tasks = [task_message(names, "selftest", "work", {"ms": 30}) for _ in range(300)]
    chaos_rig.producer.publish_batch(tasks)

    kills = 0
    for victim in list(chaos_rig.workers)[:2]:  # kill two of three while they hold work, replace each
        chaos_rig.ledger.wait([t.message_id for t in tasks[: 80 * (kills + 1)]], timeout=30)
        victim.kill()
        kills += 1
        chaos_rig.scale(3, WARREN_PREFETCH="4")
    chaos_rig.scale(1)  # scaling down drains gracefully: no task in flight is lost
    report = chaos_rig.account([t.message_id for t in tasks], timeout=90)

    assert kills == 2
    assert (report.completed, report.dead_lettered, report.lost) == (300, 0, 0)
    # A kill between publishing a completion and acking it shows up here, never as a loss.
    assert report.duplicates <= 2 * 4


def test_a_poison_message_that_kills_every_worker_ends_in_the_dead_letter_queue(chaos_rig) -> None:
    chaos_rig.apply_topology()  # delivery limit 3
    poison = chaos_rig.producer.publish("selftest", "crash", {})
    good = [chaos_rig.producer.publish("selftest", "work", {"ms": 1}) for _ in range(5)]

    worker = chaos_rig.worker(ready=False, restart=True)  # restarted whenever it dies, as a pod would be

    report = chaos_rig.account([poison, *good], timeout=90)

    assert (report.completed, report.dead_lettered, report.lost) == (5, 1, 0)
    info = chaos_rig.ledger.dead[poison]
    assert (info.reason, info.error_class, info.attempts) == ("crash_loop", "WorkerDied", 3)
    assert worker.restarts() == 3  # exactly the delivery limit: then it stops taking workers down
    assert worker.wait_ready().alive()


def test_broker_restart_under_load_loses_nothing_and_workers_recover_by_themselves(chaos_rig) -> None:
    chaos_rig.apply_topology()
    workers = [chaos_rig.worker(WARREN_PREFETCH="10") for _ in range(2)]
    names = Names(chaos_rig.settings.namespace)
    tasks = [task_message(names, "selftest", "work", {"ms": 2}) for _ in range(2000)]
    halfway, broker_down = threading.Event(), threading.Event()
    publish_errors: list[str] = []

    def publish_all() -> None:
        producer = Producer(chaos_rig.settings, name="test-load")
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
    chaos_rig.platform.stop_broker()
    broker_down.set()
    deadline = time.monotonic() + 30
    while not publish_errors and time.monotonic() < deadline:
        time.sleep(0.05)
    chaos_rig.platform.start_broker()
    publisher.join(timeout=120)
    report = chaos_rig.account([t.message_id for t in tasks], timeout=120, quiet_for=1.0)

    assert not publisher.is_alive()
    assert publish_errors, "publishing never met the outage: the test proved nothing"
    assert (report.completed, report.dead_lettered, report.lost) == (2000, 0, 0)
    for w in workers:
        assert w.alive()
        assert "broker connection lost" in w.log()
        assert w.log().count(" consuming ") >= 2  # reconnected and resumed in the same process


def test_a_task_longer_than_three_heartbeats_completes_on_the_same_connection(chaos_rig) -> None:
    chaos_rig.configure(WARREN_HEARTBEAT="1")
    chaos_rig.apply_topology()
    worker = chaos_rig.worker()
    task = chaos_rig.producer.publish("selftest", "work", {"ms": 4500})

    report = chaos_rig.account([task], timeout=30, quiet_for=1.0)

    assert (report.completed, report.duplicates, report.lost) == (1, 0, 0)
    assert chaos_rig.ledger.events[task][0]["redelivered"] is False
    assert "broker connection lost" not in worker.log()
    assert worker.log().count(" consuming ") == 1


def test_sigterm_mid_task_finishes_acks_and_exits_0_without_redelivery(chaos_rig) -> None:
    worker, task = chaos_rig.busy_worker(2000)

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=chaos_rig.settings.shutdown_grace + 5) == 0
    report = chaos_rig.account([task], timeout=10, quiet_for=0.5)

    assert (report.completed, report.duplicates, report.lost) == (1, 0, 0)
    assert chaos_rig.ledger.events[task][0]["redelivered"] is False
    assert chaos_rig.queue_ready(chaos_rig.work_queue) == 0  # acked, not handed back for redelivery
    assert "SIGTERM: draining 1 task(s) in flight" in worker.log()


def test_a_second_sigterm_exits_at_once_and_the_task_is_redelivered_not_lost(chaos_rig) -> None:
    worker, task = chaos_rig.busy_worker(4000)

    worker.signal(signal.SIGTERM)
    wait_for_log(worker, "draining")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=3) == 130
    chaos_rig.worker("successor")
    report = chaos_rig.account([task], timeout=30)

    assert (report.completed, report.duplicates, report.lost) == (1, 0, 0)
    assert chaos_rig.ledger.events[task][0]["redelivered"] is True


def test_poison_at_prefetch_4_is_dead_lettered_alone_and_no_neighbour_goes_with_it(chaos_rig) -> None:
    """Every message in flight on a worker that dies has its delivery count raised; counted there,
    a poison message's neighbours reached the limit with it. They are moved to the pool's suspect
    queue instead, where messages run one at a time and every death counted is the message's own."""
    chaos_rig.apply_topology()  # delivery limit 3
    names = Names(chaos_rig.settings.namespace)
    ordinary = [task_message(names, "selftest", "work", {"ms": 20}) for _ in range(200)]
    poison = [task_message(names, "selftest", "crash", {}) for _ in range(3)]
    chaos_rig.producer.publish_batch([*ordinary[:50], poison[0], *ordinary[50:100], poison[1],
                                      *ordinary[100:150], poison[2], *ordinary[150:]])
    workers = [chaos_rig.worker(ready=False, restart=True, WARREN_PREFETCH="4") for _ in range(2)]

    report = chaos_rig.account([m.message_id for m in [*ordinary, *poison]], timeout=180, quiet_for=1.0)

    assert (report.completed, report.dead_lettered, report.lost) == (200, 3, 0)
    assert report.reasons == {"crash_loop": 3}  # the poison, and only the poison
    assert {chaos_rig.ledger.dead[p.message_id].reason for p in poison} == {"crash_loop"}
    assert sum(w.restarts() for w in workers) == 3 * 3  # each poison took exactly the limit of deaths


def test_kills_numerous_enough_to_reach_the_delivery_limit_dead_letter_no_ordinary_task(chaos_rig) -> None:
    chaos_rig.apply_topology()  # delivery limit 3: five kills could have reached it before
    names = Names(chaos_rig.settings.namespace)
    tasks = [task_message(names, "selftest", "work", {"ms": 15}) for _ in range(600)]
    chaos_rig.producer.publish_batch(tasks)
    workers = [chaos_rig.worker(WARREN_PREFETCH="5") for _ in range(2)]

    kills = 0
    for n in range(1, 11):  # ten SIGKILLs, each while the victim holds a full prefetch; replaced
        chaos_rig.ledger.wait([t.message_id for t in tasks[: 50 * n]], timeout=60)
        victim = workers.pop(0)
        victim.kill()
        kills += 1
        workers.append(chaos_rig.worker(WARREN_PREFETCH="5"))
    report = chaos_rig.account([t.message_id for t in tasks], timeout=180, quiet_for=1.0)

    assert kills == 10
    assert (report.completed, report.dead_lettered, report.lost) == (600, 0, 0)
    assert report.reasons == {}  # not one ordinary task dead-lettered as crash_loop
    assert report.duplicates <= kills * 5
