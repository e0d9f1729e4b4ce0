"""`warren dlq` against a real RabbitMQ: list, show, replay and purge dead letters, and a replay
SIGKILLed midway that loses nothing.

Dead letters are made for real (``tests.support.deadletters``): tasks a strict worker refused as
oversized, which a normal worker completes once they are replayed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.support.deadletters import dead_lettered, dlq, ids_in, wait_for_depth
from warren.dlq import DeadLetters, Selection
from warren.testing.ledger import Ledger
from warren.testing.processes import child_python_path
from warren.topology import Names

pytestmark = pytest.mark.broker


def warren(rig: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warren", *args], capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **rig.env, "PYTHONPATH": child_python_path(rig.env)},
    )


def completions(rig: Any, ids: list[str], *, timeout: float = 30) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """The ledger's report on ``ids`` (completion events only), and the events by id."""
    ledger = Ledger(rig.settings, completion_queue=Names(rig.settings.namespace).subscription("selftest-ledger"),
                    dead_letter_queues=())
    try:
        return ledger.wait(ids, timeout=timeout, quiet_for=0.3), ledger.events
    finally:
        ledger.close()


def test_list_show_and_replay_a_dead_letter_to_completion_with_the_cli(rig) -> None:
    ids = dead_lettered(rig, 3)
    refused = rig.producer.publish("selftest", "refuse", {"message": "card declined"})
    rig.worker("normal")
    wait_for_depth(rig, dlq(rig), 4)

    listed = warren(rig, "dlq", "list", "--pool", "selftest", "--json")
    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    assert listing["counts"] == {"selftest": {"oversized_body": 3, "permanent_failure": 1}}
    assert [m["id"] for m in listing["messages"]] == [*ids, refused]  # in queue order
    # Every installed pool by default: the shop's have no queues in this namespace and are left out.
    everywhere = json.loads(warren(rig, "dlq", "list", "--json").stdout)
    assert everywhere["counts"] == listing["counts"]
    only = json.loads(warren(rig, "dlq", "list", "--pool", "selftest", "--reason", "permanent_failure",
                             "--json").stdout)
    assert [(m["id"], m["error_class"], m["attempts"]) for m in only["messages"]] == [(refused, "PermanentError", 1)]
    table = warren(rig, "dlq", "list", "--pool", "selftest").stdout
    assert "oversized_body 3, permanent_failure 1" in table and refused in table

    shown = warren(rig, "dlq", "show", refused, "--pool", "selftest")
    assert shown.returncode == 0, shown.stderr
    assert "reason             permanent_failure" in shown.stdout
    assert "attempt 1" in shown.stdout and "PermanentError: card declined" in shown.stdout
    assert '"message": "card declined"' in shown.stdout  # the body
    details = json.loads(warren(rig, "dlq", "show", refused, "--pool", "selftest", "--json").stdout)
    assert details["headers"]["x-warren-reason"] == "permanent_failure"
    assert details["history"][0]["error"] == "PermanentError: card declined"
    assert warren(rig, "dlq", "show", "no-such-id", "--pool", "selftest").returncode == 4

    dry = warren(rig, "dlq", "replay", "--pool", "selftest", "--reason", "oversized_body", "--dry-run")
    assert dry.returncode == 0 and "would replay 3 dead letter(s)" in dry.stdout
    assert rig.queue_ready(dlq(rig)) == 4  # nothing moved

    replay = warren(rig, "dlq", "replay", "--pool", "selftest", "--reason", "oversized_body", "--rate", "50")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 3 dead letter(s) (selftest 3); 1 left as they were" in replay.stdout
    assert "read 4/4, replay 3" in replay.stderr  # the progress line
    report, events = completions(rig, ids)
    assert (report.completed, report.duplicates, report.lost) == (3, 0, 0)
    assert {events[i][0]["attempt"] for i in ids} == {1}
    assert ids_in(rig, dlq(rig)) == [refused]


def test_a_replay_keeps_the_history_starts_the_attempts_afresh_and_records_itself(rig) -> None:
    rig.apply_topology()
    rig.worker()
    task = rig.producer.publish("selftest", "fail", {"message": "gateway down"})
    wait_for_depth(rig, dlq(rig), 1)
    dead = DeadLetters(rig.settings, ["selftest"])
    (entry,) = dead.listing().entries
    assert (entry.id, entry.reason, entry.attempts, len(entry.history)) == (task, "retries_exhausted", 4, 4)

    assert dead.replay(Selection(ids=frozenset({task}))).ids == (task,)

    wait_for_depth(rig, dlq(rig), 1)  # it fails again, four more times
    (again,) = dead.listing().entries
    assert again.attempts == 4 and [h["attempt"] for h in again.history] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert [(r["reason"], r["attempts"]) for r in again.replays] == [("retries_exhausted", 4)]


def test_purge_asks_first_and_deletes_only_what_was_selected(rig) -> None:
    ids = dead_lettered(rig, 3)

    unconfirmed = warren(rig, "dlq", "purge", ids[0], "--pool", "selftest")  # no terminal to ask on
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr
    nothing = warren(rig, "dlq", "purge", "--pool", "selftest")
    assert nothing.returncode == 2 and "nothing selected" in nothing.stderr
    purged = warren(rig, "dlq", "purge", ids[0], ids[2], "--pool", "selftest", "--yes")
    assert purged.returncode == 0 and "purged 2 dead letter(s)" in purged.stdout

    assert ids_in(rig, dlq(rig)) == [ids[1]]


def test_bad_arguments_are_refused_with_a_clear_message(rig) -> None:
    for args, message in [
        (("dlq", "replay", "--all", "--rate", "0"), "must be above 0"),
        (("dlq", "list", "--older-than", "soon"), "not a duration: 'soon'"),
        (("dlq", "list", "--limit", "-3"), "must be at least 1"),
        (("dlq", "list", "--pool", "orders"), "pool 'orders' has no dead-letter queue"),  # not deployed here
    ]:
        done = warren(rig, *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


@pytest.mark.chaos
def test_a_replay_killed_midway_loses_nothing_and_duplicates_at_most_one(rig) -> None:
    ids = dead_lettered(rig, 200)
    work_queue = Names(rig.settings.namespace).queue("selftest")
    replay = subprocess.Popen(
        [sys.executable, "-m", "warren", "dlq", "replay", "--all", "--pool", "selftest", "--rate", "200"],
        env={**os.environ, **rig.env, "PYTHONPATH": child_python_path(rig.env)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_depth(rig, work_queue, 40)
    finally:
        os.kill(replay.pid, signal.SIGKILL)
        replay.wait(timeout=10)

    in_work, in_dlq = ids_in(rig, work_queue), ids_in(rig, dlq(rig))
    assert 40 <= len(in_work) < 200, "the replay was not killed midway"
    assert set(in_work) | set(in_dlq) == set(ids)  # nothing lost
    assert len(in_work) + len(in_dlq) - len(ids) <= 1  # at most the one republished but not yet removed
    assert len(set(in_work)) == len(in_work) and len(set(in_dlq)) == len(in_dlq)

    # The rest replays, and every task completes.
    rig.worker("normal", WARREN_PREFETCH="20")
    assert DeadLetters(rig.settings, ["selftest"]).replay(Selection(everything=True)).count == len(in_dlq)
    report, _ = completions(rig, ids, timeout=60)
    assert (report.completed, report.lost) == (200, 0) and report.duplicates <= 1
