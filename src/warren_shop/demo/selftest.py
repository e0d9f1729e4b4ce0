"""``warren-shop demo --selftest``: the runtime end to end on this machine, in about half a minute.

Starts a private RabbitMQ node (unless ``WARREN_BROKER_URL`` is set), three selftest workers, and
publishes a burst of tasks: most succeed, some fail until their retries run out, some are malformed.
Midway it SIGKILLs a worker holding a task and starts a replacement. It ends with a table in which
every task is accounted for, and stops everything it started. Exit 0 only if nothing was lost.
"""

from __future__ import annotations

import random
import secrets
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from warren import topology
from warren.broker import Session
from warren.config import Settings, settings_from_env
from warren.producer import Producer, task_message
from warren.testing.ledger import Ledger
from warren.testing.processes import LocalWorker
from warren.testing.selftest import pool as selftest
from warren.topology import Names
from warren_shop.demo import provision_broker, say

TASKS = 150
WORKERS = 3


def _burst(names: Names, rng: random.Random) -> list:
    messages = []
    for i in range(TASKS):
        roll = i % 30
        if roll == 7:
            messages.append(task_message(names, "selftest", "fail", {"message": "payment gateway timeout"}))
        elif roll == 13:
            messages.append(task_message(names, "selftest", "work", b'{"ms": 12,'))  # malformed JSON
        elif roll == 21:
            messages.append(task_message(names, "selftest", "ship_to_mars", {}))  # unknown task type
        else:
            messages.append(task_message(names, "selftest", "work", {"ms": rng.randint(50, 400)}))
    return messages


def run(settings: Settings) -> int:
    rng = random.Random(7)
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warren-demo-")))
        env = {
            "WARREN_NAMESPACE": f"demo{secrets.token_hex(3)}",
            "WARREN_RETRY_INITIAL_DELAY_MS": "300",
            "WARREN_RETRY_MAX_ATTEMPTS": "3",
            "WARREN_LOG_LEVEL": "WARNING",
        }
        broker_url = provision_broker(stack, work_dir, settings).url
        env["WARREN_BROKER_URL"] = broker_url
        demo = settings_from_env(env)
        session = Session.open(demo, name="warren-demo")
        topology.apply(session, topology.build(demo, pools=[selftest.spec]))
        session.close()

        workers = [LocalWorker(env, work_dir, name=f"w{i + 1}") for i in range(WORKERS)]

        def stop_workers() -> None:
            for w in workers:
                w.stop()

        stack.callback(stop_workers)
        for w in workers:
            w.wait_ready()
        say(f"{WORKERS} workers consuming {demo.namespace}.selftest (prefetch 1)")

        names = Names(demo.namespace)
        burst = _burst(names, rng)
        with Producer(demo, name="warren-demo") as producer:
            producer.publish_batch(burst)
        ids = [m.message_id for m in burst]
        say(f"published {len(ids)} tasks with publisher confirms")

        ledger = Ledger.for_pool(demo)
        stack.callback(ledger.close)
        killed = False
        deadline = time.monotonic() + 90
        last = -1
        while not ledger.settled(ids) and time.monotonic() < deadline:
            ledger.collect()
            report = ledger.report(ids)
            done = report.completed + report.dead_lettered
            if done // 25 != last // 25:
                say(f"progress {done:>3}/{len(ids)}  completed={report.completed} dead-lettered={report.dead_lettered}")
            last = done
            if not killed and done >= len(ids) // 3:
                victim = workers[0]
                victim.signal(signal.SIGKILL)
                victim.wait(timeout=10)
                killed = True
                say(f"SIGKILLed worker {victim.name} mid-task; the broker redelivers its task")
                workers.append(LocalWorker(env, work_dir, name="w4"))
            time.sleep(0.1)
        report = ledger.wait(ids, timeout=5, quiet_for=0.5)

        running = [w for w in workers if w.alive()]
        for w in running:
            w.signal(signal.SIGTERM)
        codes = [w.wait(timeout=demo.shutdown_grace + 5) for w in running]
        say("workers stopped with SIGTERM (graceful drain): exit codes " + ", ".join(map(str, codes)))
        redelivered = sum(1 for events in ledger.events.values() if any(e["redelivered"] for e in events))
        rows = [("completed", report.completed), ("  of which redelivered after the kill", redelivered)]
        rows += [(f"dead-lettered: {reason}", count) for reason, count in sorted(report.reasons.items())]
        rows += [("duplicates", report.duplicates), ("lost", report.lost), ("total published", report.expected)]
        print()
        print(f"  {'outcome':<40} {'tasks':>5}")
        print(f"  {'-' * 40} {'-' * 5}")
        for label, count in rows:
            print(f"  {label:<40} {count:>5}")
        print()
        return 0 if report.lost == 0 else 1
