"""``warren-shop demo``: the reference e-commerce pipeline, live, in about a minute.

Starts a private RabbitMQ node (unless ``WARREN_BROKER_URL`` is set), migrates the shop's database
(an SQLite file in its temp dir, unless ``WARREN_SHOP_DATABASE_URL`` names one, e.g. PostgreSQL),
every role as worker processes and the HTTP API; sends a burst of orders through the API (some out
of stock, some over the credit limit, one malformed straight onto the queue), shows queues and
roles live, SIGKILLs a payments worker mid-charge, and ends with a table in which every order is
accounted for: its final status read back through the API (``GET /api/v1/orders/{id}``) from the
store, and its dead letters from the dead-letter queues. Stops everything it started; exits 0 only
if no order was lost and none was charged twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from warren.config import Settings
from warren.dlq import DeadLetters, Entry
from warren.producer import Producer
from warren.testing.ledger import Report
from warren.testing.processes import child_python_path
from warren_shop.demo import provision_broker, say
from warren_shop.demo.view import LiveView
from warren_shop.local import LocalApi, LocalShop
from warren_shop.pipeline import POOLS
from warren_shop.store import Store
from warren_shop.store.schema import charges, payment_attempts

ORDERS = 40
REPLICAS = {"payments": 3, "email": 2}
ENV = {
    "WARREN_SHOP_PAYMENT_MIN_MS": "800",
    "WARREN_SHOP_PAYMENT_MAX_MS": "2000",
    "WARREN_SHOP_EMAIL_MS": "1000",
    "WARREN_SHOP_SMS_MS": "100",
    "WARREN_SHOP_SHIPPING_MS": "200",
    # a flaky payment gateway: 10% transient failures
    "WARREN_SHOP_FAILURE_RATE": json.dumps({"payments": 0.1, "shipping": 0.1}),
    "WARREN_SHOP_CREDIT_LIMIT_CENTS": "5000",
    "WARREN_RETRY_INITIAL_DELAY_MS": "300",
    "WARREN_RETRY_MAX_ATTEMPTS": "5",  # 10% faults: a payment dead-letters once in 100,000
    "WARREN_LOG_LEVEL": "WARNING",
}


def _burst() -> list[list[tuple[str, int]]]:
    """Mostly ordinary baskets; every 10th over the credit limit; two that cannot be in stock."""
    baskets = []
    for n in range(ORDERS):
        if n % 10 == 9:
            baskets.append([("sku-coffee", 8)])  # 71.92 > 50.00: declined by payments
        elif n in (5, 25):
            baskets.append([("sku-rare-truffle", 5)])  # 3 in stock: 409 at the API
        else:
            baskets.append([("sku-apple", 1 + n % 3), ("sku-bread", 1)])
    return baskets


def run(settings: Settings, *, keep: bool = False) -> int:
    started = time.monotonic()
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warren-demo-")))
        broker = provision_broker(stack, work_dir, settings)
        token_file = work_dir / "admin-token"
        token_file.write_text(secrets.token_urlsafe(32))
        token_file.chmod(0o600)
        env = {**ENV, "WARREN_BROKER_URL": broker.url, "WARREN_NAMESPACE": f"shop{secrets.token_hex(3)}",
               "WARREN_SHOP_DATABASE_URL": provision_database(work_dir),
               "WARREN_API_ADMIN_TOKEN_FILE": str(token_file)}
        # Dead letters stay in their queues: `warren dlq` and the dashboard find them.
        shop = stack.enter_context(LocalShop(env, work_dir, keep_dead_letters=True, metrics=True))
        dead = DeadLetters(shop.settings, POOLS, name="warren-demo")
        say(shop.migrated)
        shop.start(replicas=REPLICAS)
        api = shop.start_api()
        say(f"{len(shop.running_workers())} workers ({', '.join(POOLS)}) and the API at {api.url} are up")
        watched = shop.workers["payments"][-1]  # not the one SIGKILLed midway
        scrape = f"http://127.0.0.1:{shop.metrics_ports[watched.name]}/metrics"
        before = completed_tasks(scrape)

        statuses: Counter[int] = Counter()
        accepted: list[str] = []
        for basket in _burst():
            status, body = shop.order(*basket)
            statuses[status] += 1
            if status == 202:
                accepted.append(body["order_id"])
        status, _ = api.call("POST", "/api/v1/orders", {"customer": {"email": "nobody"}, "items": []})
        statuses[status] += 1
        poison = f"poison-{secrets.token_hex(3)}"  # a client that bypassed the API's validation
        with Producer(shop.settings, name="warren-demo") as producer:
            producer.publish("orders", "place", {"order_id": poison, "customer": {"email": "x@y.z"}, "items": []},
                             message_id=poison)
        accepted.append(poison)
        say(f"sent {sum(statuses.values())} requests: "
            + ", ".join(f"{n} x HTTP {s}" for s, n in sorted(statuses.items()))
            + "; and one malformed order straight onto the queue")

        ledger = shop.ledger
        view = LiveView(shop.settings, broker.management, pools=POOLS)
        killed = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ledger.collect()
            report = ledger.report(accepted)
            settled = report.completed + report.failed + sum(dead.depths().values())
            done = settled == len(accepted) and view.drained()
            view.show(settled=settled, total=len(accepted), note=killed, final=done)
            if done:
                break
            if killed is None and settled >= len(accepted) // 3:
                victim = shop.workers["payments"][0]
                victim.signal(signal.SIGKILL)
                victim.wait(timeout=10)
                shop.start_worker("payments", ready=False)
                killed = f"SIGKILLed {victim.name} mid-charge: the broker redelivers its payment to another worker"
            time.sleep(0.5)
        report = ledger.wait(accepted, timeout=5, quiet_for=0.5)
        outcome = Outcome.read_back(api, dead_letters_by_order(dead), accepted)
        outcome.show_examples()
        say(f"curl {scrape} ({watched.name}): warren_tasks_total{{outcome=\"completed\"}} "
            f"{before:g} -> {completed_tasks(scrape):g}")
        replay = gateway_outage(shop, api, dead, token_file.read_text())

        running = shop.running_workers()
        for w in running:
            w.signal(signal.SIGTERM)
        codes = Counter(w.wait(timeout=shop.settings.shutdown_grace + 5) for w in running)
        say("workers stopped with SIGTERM (graceful drain): exit codes "
            + ", ".join(f"{n} x {code}" for code, n in sorted(codes.items())))
        payments = _payments(shop.store)
        _table(outcome, report, statuses, payments, replay, time.monotonic() - started)
        ok = outcome.lost == 0 and payments[2] == 0 and replay.completed == replay.dead_lettered
        if keep:
            _keep(shop, api, token_file)
        return 0 if ok else 1


def provision_database(work_dir: Path) -> str:
    """The database of WARREN_SHOP_DATABASE_URL if one is configured, else an SQLite file here."""
    if url := os.environ.get("WARREN_SHOP_DATABASE_URL"):
        say("using the database from WARREN_SHOP_DATABASE_URL")
        return url
    return f"sqlite:///{work_dir / 'shop.sqlite'}"


@dataclass
class Outcome:
    """Every order's final status as the API reads it back from the store, and its dead letters."""

    completed: int
    failed: Counter[str]
    dead_lettered: Counter[str]  # orders with a message in a dead-letter queue, by reason
    unfinished: list[str]  # neither completed nor failed in the store
    examples: dict[str, dict[str, Any]]  # one order of each final status, as the API answered

    @property
    def lost(self) -> int:
        """Orders that neither finished in the store nor left a dead letter saying why."""
        return len(self.unfinished)

    @classmethod
    def read_back(cls, api: LocalApi, dead_letters: dict[str, Entry], order_ids: list[str]) -> Outcome:
        completed, failed, dead, unfinished = 0, Counter[str](), Counter[str](), []
        examples: dict[str, dict[str, Any]] = {}
        for order_id in order_ids:
            status, order = api.call("GET", f"/api/v1/orders/{order_id}")
            if status == 200:
                examples.setdefault(order["status"], order)
            if order_id in dead_letters:
                dead[dead_letters[order_id].reason] += 1
            if status == 200 and _fulfilled(order):
                completed += 1
            elif status == 200 and order["status"] == "failed":
                failed[order["reason"]] += 1
            elif order_id not in dead_letters:
                unfinished.append(order_id)
        return cls(completed, failed, dead, unfinished, examples)

    def show_examples(self) -> None:
        for order in self.examples.values():
            steps = " -> ".join(e["status"] + (f" ({e['reason']})" if e.get("reason") else "")
                                for e in order["history"])
            workers = sorted({e["worker"] for e in order["history"]})
            say(f"GET /api/v1/orders/{order['order_id']}: {steps}; by {len(workers)} processes")


def dead_letters_by_order(dead: DeadLetters) -> dict[str, Entry]:
    """Every dead letter in the shop's dead-letter queues (read once and left there), by the order
    its body names; a body that names none (malformed), by its message id."""
    found = {}
    for entry in dead.listing().entries:
        try:
            body = json.loads(entry.body)
        except (ValueError, RecursionError):
            body = None
        order_id = body.get("order_id") if isinstance(body, dict) else None
        found[order_id if isinstance(order_id, str) else entry.id] = entry
    return found


@dataclass
class Replay:
    """The payment gateway's outage: orders dead-lettered by it, replayed once it was back."""

    dead_lettered: int = 0
    by_command: int = 0  # replayed with `warren dlq replay ID`
    by_api: int = 0  # replayed through the operations API (what the dashboard's button calls)
    completed: int = 0  # of those orders, completed after their replay


def gateway_outage(shop: LocalShop, api: LocalApi, dead: DeadLetters, token: str) -> Replay:
    """The payment gateway goes down: every charge fails, two orders are retried until they are
    dead-lettered (retries_exhausted). It comes back, and an operator finds them with `warren dlq
    list`, reads one with `warren dlq show`, and replays one with the command and the other through
    the operations API, each to completion."""
    result = Replay()
    for w in shop.workers["payments"]:
        if w.alive():
            w.signal(signal.SIGTERM)
            w.wait(timeout=shop.settings.shutdown_grace + 5)
    shop.start_worker("payments", WARREN_SHOP_FAILURE_RATE=json.dumps({"payments": 1.0}))
    say("the payment gateway goes down (every charge fails); two more orders arrive")
    orders = [shop.order(("sku-apple", 1), ("sku-bread", 1))[1]["order_id"] for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(stranded := {o: e for o, e in dead_letters_by_order(dead).items() if o in orders}) < len(orders):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the outage's orders were not dead-lettered within 60 s: {sorted(stranded)}")
        time.sleep(0.5)
    result.dead_lettered = len(stranded)
    say(f"{len(stranded)} payments dead-lettered after {WARREN_RETRIES} attempts each; the gateway is back")
    for w in shop.workers["payments"]:
        if w.alive():
            w.signal(signal.SIGTERM)
            w.wait(timeout=shop.settings.shutdown_grace + 5)
    for _ in range(REPLICAS["payments"]):
        shop.start_worker("payments")

    first, second = (stranded[o] for o in orders)
    _warren(shop, "dlq", "list", "--pool", "payments")
    _warren(shop, "dlq", "show", first.id, lines=14)
    if _warren(shop, "dlq", "replay", first.id) == 0:
        result.by_command = 1
    status, body = api.call("POST", "/api/v1/admin/dlq/replay", {"pool": "payments", "ids": [second.id]},
                            headers={"Authorization": f"Bearer {token}"})
    answer = body if isinstance(body, dict) else {}
    say(f"POST /api/v1/admin/dlq/replay (what the dashboard's Replay button does) for {second.id}: HTTP {status}, "
        f"{answer.get('action', body)} {answer.get('count', '')}")
    if status == 200 and answer.get("count") == 1:
        result.by_api = 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answers = [api.call("GET", f"/api/v1/orders/{o}") for o in orders]
        result.completed = sum(1 for status, order in answers if status == 200 and _fulfilled(order))
        if result.completed == len(orders):
            break
        time.sleep(0.5)
    say(f"after the replays: {result.completed} of {len(orders)} orders completed (paid, shipped, e-mailed)")
    return result


WARREN_RETRIES = int(ENV["WARREN_RETRY_MAX_ATTEMPTS"])


def completed_tasks(url: str) -> float:
    """The sum of a worker's ``warren_tasks_total{outcome="completed"}`` series, as Prometheus scrapes them."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) if family.name == "warren_tasks"
               for sample in family.samples
               if sample.name == "warren_tasks_total" and sample.labels.get("outcome") == "completed")


def _warren(shop: LocalShop, *args: str, lines: int | None = None) -> int:
    """Run the ``warren`` command as an operator would (this shop's broker and namespace), and show it."""
    env = {**os.environ, **shop.env, "PYTHONPATH": child_python_path(shop.env)}
    done = subprocess.run([sys.executable, "-m", "warren", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    say(f"$ warren {' '.join(args)}")
    shown = (done.stdout + done.stderr).rstrip().splitlines()
    for line in shown[:lines]:
        print(f"    {line}")
    if lines is not None and len(shown) > lines:
        print(f"    ... ({len(shown) - lines} more lines)")
    return done.returncode


def _keep(shop: LocalShop, api: LocalApi, token_file: Path) -> None:
    """Leave the shop running until Ctrl-C, saying how to look at it."""
    say(f"the shop keeps running (--keep). The dashboard: {api.url}/dashboard (token: {token_file.read_text()})")
    say(f"its API key (Authorization: Bearer ...): {api.key}")
    say("in another shell, with these variables, `warren dlq list` finds its dead letters:")
    for name in ("WARREN_BROKER_URL", "WARREN_NAMESPACE", "WARREN_SHOP_DATABASE_URL"):
        print(f"    export {name}={shop.env[name]}")
    say("Ctrl-C stops everything")
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


def _fulfilled(order: dict[str, Any]) -> bool:
    """Complete means what its history says: paid, shipped and e-mailed, then completed."""
    steps = [entry["status"] for entry in order["history"]]
    return order["status"] == "completed" and {"paid", "shipped", "emailed", "completed"} <= set(steps)


def _payments(store: Store) -> tuple[int, int, int]:
    """(charges, orders whose payment ran more than once, orders charged more than once), from the store."""
    return store.read(lambda conn: (
        conn.execute(sa.select(sa.func.count()).select_from(charges)).scalar_one(),
        conn.execute(sa.select(sa.func.count()).select_from(
            sa.select(payment_attempts.c.order_id).group_by(payment_attempts.c.order_id)
            .having(sa.func.count() > 1).subquery())).scalar_one(),
        conn.execute(sa.select(sa.func.count() - sa.func.count(sa.distinct(charges.c.order_id)))
                     .select_from(charges)).scalar_one(),
    ))


def _table(outcome: Outcome, report: Report, statuses: Counter[int], payments: tuple[int, int, int],
           replay: Replay, seconds: float) -> None:
    charged, handled_twice, charged_twice = payments
    rows: list[tuple[str, int | None]] = [
        ("orders sent to the API", sum(statuses.values())),
        ("  rejected: 409 out of stock", statuses[409]),
        ("  rejected: 422 invalid", statuses[422]),
        ("  accepted: 202", statuses[202]),
        ("malformed order put straight on the queue", 1),
        ("orders to account for", report.expected),
        ("final status, read back from the store (GET /api/v1/orders/ID)", None),
        ("  completed (paid, shipped, e-mailed)", outcome.completed),
        *((f"  failed: {reason}", n) for reason, n in sorted(outcome.failed.items())),
        ("  lost", outcome.lost),
        ("dead letters, from the dead-letter queues", None),
        *((f"  dead-lettered: {reason}", n) for reason, n in sorted(outcome.dead_lettered.items())),
        ("the payment gateway's outage", None),
        ("  orders dead-lettered: retries_exhausted", replay.dead_lettered),
        ("  replayed with warren dlq replay", replay.by_command),
        ("  replayed through the operations API", replay.by_api),
        ("  completed after their replay", replay.completed),
        ("outcomes announced twice (at-least-once)", report.duplicates),
        ("payments charged", charged),
        ("  orders whose payment ran twice (kill, retry)", handled_twice),
        ("  orders charged twice", charged_twice),
    ]
    print()
    print(f"  {'order':<48} {'count':>5}")
    print(f"  {'-' * 48} {'-' * 5}")
    for label, count in rows:
        print(f"  {label}" if count is None else f"  {label:<48} {count:>5}")
    if outcome.unfinished:
        print(f"\n  ORDERS LOST (unfinished in the store, no dead letter): {', '.join(outcome.unfinished)}")
    else:
        print(f"\n  every order accounted for in {seconds:.0f} s")
    print()
