"""The shop under chaos, every worker sharing one real PostgreSQL as pods share one in production.

Payments and inventory workers SIGKILLed at random under load: every order charged exactly once,
stock never negative and never lost (reserved + available == stocked, reserved == what the
reservations hold), every order's history ending in a terminal state. The database stopped and
started under load: tasks retried, none dead-lettered or lost, the API 503 while it is down.
Both end with their counts in the run's ledger section.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.database import fresh_postgres_url
from tests.support.fixtures import record_report
from tests.support.shop import Shop
from warren.producer import Producer, task_message
from warren.topology import Names
from warren_shop.local import LocalPostgres
from warren_shop.store import orders, stock
from warren_shop.store.schema import charges, payment_attempts, reservations

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.chaos]

CATALOG = {"sku-apple": (120, 100_000), "sku-truffle": (900, 30), "sku-coffee": (899, 100_000)}
CHAOS = {
    "WARREN_SHOP_CATALOG": json.dumps(CATALOG),
    "WARREN_SHOP_PAYMENT_MIN_MS": "60",
    "WARREN_SHOP_PAYMENT_MAX_MS": "180",
    "WARREN_SHOP_EMAIL_MS": "10",
    "WARREN_SHOP_SMS_MS": "5",
    "WARREN_SHOP_SHIPPING_MS": "10",
    "WARREN_SHOP_CREDIT_LIMIT_CENTS": "5000",
    "WARREN_RETRY_MAX_ATTEMPTS": "5",
    "WARREN_DELIVERY_LIMIT": "10",  # a message caught by several kills is redelivered, not a crash loop
}
ORDERS = 120
RETRIED = r"outcome=retry .*error=StoreUnavailable"  # a worker's line for a task retried through its queue


def baskets(rng: random.Random) -> list[list[tuple[str, int]]]:
    """Ordinary orders; every third wants the scarce truffle (demand about twice its 30 units);
    every tenth is over the credit limit."""
    result = []
    for n in range(ORDERS):
        basket = [("sku-apple", rng.randint(1, 3))]
        if n % 3 == 0:
            basket.append(("sku-truffle", rng.randint(1, 3)))
        result.append([("sku-coffee", 8)] if n % 10 == 7 else basket)
    return result


def place_directly(shop: Shop, orders_to_place: list[list[tuple[str, int]]]) -> list[str]:
    """Orders straight onto the orders queue, as if many API pods had checked stock at one moment:
    the reservations, not the stock check, must keep the truffle from being sold twice."""
    names = Names(shop.settings.namespace)
    ids = [f"chaos-{secrets.token_hex(6)}" for _ in orders_to_place]
    messages = [task_message(names, "orders", "place", {
        "order_id": order_id, "customer": {"email": "ada@example.com", "phone": "+44 20 7946 0000"},
        "items": [{"sku": sku, "quantity": q} for sku, q in basket]}, message_id=order_id, correlation_id=order_id)
        for order_id, basket in zip(ids, orders_to_place, strict=True)]
    with Producer(shop.settings, name="test-chaos") as producer:
        producer.publish_batch(messages)
    return ids


def check_the_store(shop: Shop, ids: list[str]) -> dict[str, Any]:
    """Every invariant of the shop's state, asserted; the counts, for the ledger section."""
    records = {i: shop.store.read(lambda conn, i=i: orders.read(conn, i)) for i in ids}
    assert all(records.values()), [i for i, r in records.items() if r is None]
    final = Counter(r["status"] if r["status"] != "failed" else f"failed:{r['reason']}" for r in records.values())
    for order_id, record in records.items():
        steps = [entry["status"] for entry in record["history"]]
        assert steps[-1] in ("completed", "failed") and steps.count(steps[-1]) == 1, (order_id, steps)
        if record["status"] == "completed":
            assert {"accepted", "reserved", "paid", "shipped", "emailed"} <= set(steps), (order_id, steps)
    charged = Counter(o for (o,) in shop.rows("SELECT order_id FROM charges") if o in records)
    completed = {i for i, r in records.items() if r["status"] == "completed"}
    assert charged == {i: 1 for i in completed}  # every completed order charged once, nothing else charged
    totals = shop.store.read(stock.totals)
    held = Counter[str]()
    for (items,) in shop.store.read(lambda conn: conn.execute(
            sa.select(reservations.c["items"]).where(reservations.c.state == "reserved")).all()):
        for line in items:
            held[line["sku"]] += line["quantity"]
    for sku, (stocked, available, reserved) in totals.items():
        assert available >= 0 and available + reserved == stocked and reserved == held[sku], (sku, totals[sku])
    reruns = shop.store.read(lambda conn: conn.execute(sa.select(sa.func.count()).select_from(
        sa.select(payment_attempts.c.order_id).group_by(payment_attempts.c.order_id)
        .having(sa.func.count() > 1).subquery())).scalar_one())
    return {"orders": len(records), **dict(sorted(final.items())),
            "charged": shop.store.read(lambda conn: conn.execute(
                sa.select(sa.func.count()).select_from(charges)).scalar_one()),
            "payments_rerun": reruns, "truffle_sold": f"{totals['sku-truffle'][2]}/{totals['sku-truffle'][0]}"}


@pytest.fixture
def chaos_shop(broker, postgres, tmp_path) -> Iterator[Shop]:
    shop = Shop({"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": f"c{secrets.token_hex(4)}", **CHAOS},
                tmp_path, database_url=fresh_postgres_url(postgres))
    yield shop
    shop.stop()


def test_payments_and_inventory_workers_killed_at_random_charge_once_and_never_oversell(chaos_shop: Shop,
                                                                                      request) -> None:
    shop, rng = chaos_shop, random.Random(2026)
    shop.start(("orders", "shipping", "email", "sms", "analytics", "audit"))
    for pool, count in (("payments", 3), ("inventory", 2)):
        for _ in range(count):
            shop.start_worker(pool, ready=False)
    for pool in ("payments", "inventory"):
        for w in shop.workers[pool]:
            w.wait_ready()

    ids = place_directly(shop, baskets(rng))
    kills: Counter[str] = Counter()
    deadline = time.monotonic() + 20
    while sum(kills.values()) < 8 and time.monotonic() < deadline:  # a SIGKILL every 0.4 to 1 s, as pods die
        time.sleep(rng.uniform(0.4, 1.0))
        pool = rng.choice(("payments", "payments", "inventory"))
        victim = rng.choice([w for w in shop.workers[pool] if w.alive()])
        victim.signal(signal.SIGKILL)
        victim.wait(timeout=10)
        kills[pool] += 1
        shop.start_worker(pool, ready=False)  # its replacement, as the Deployment would start one
    report = shop.ledger.wait(ids, timeout=120, quiet_for=1.0)

    record_report(request, report)
    counts = check_the_store(shop, ids)
    record_report(request, "store: " + " ".join(f"{k}={v}" for k, v in counts.items())
                  + f" kills=payments:{kills['payments']},inventory:{kills['inventory']}")
    assert sum(kills.values()) == 8 and kills["payments"] and kills["inventory"]
    assert (report.completed + report.failed, report.dead_lettered, report.lost) == (ORDERS, 0, 0)
    assert report.duplicates <= sum(kills.values())  # a kill between publish and ack: seen, never lost
    assert counts["failed:out_of_stock"] > 0 and counts["failed:payment_declined"] == ORDERS // 10
    assert counts["truffle_sold"] == "30/30" or counts["failed:out_of_stock"] == 0
    assert counts["payments_rerun"] >= 1, "no kill hit a payment in progress: the test proved little"


@pytest.fixture
def own_cluster() -> Iterator[LocalPostgres]:
    """A PostgreSQL of this test's own, to stop and start under load."""
    with LocalPostgres(durable=False, name="warren-chaos") as cluster:
        yield cluster


def test_the_database_stopped_and_started_under_load_loses_nothing(broker, own_cluster, tmp_path, request) -> None:
    shop = Shop({"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": f"d{secrets.token_hex(4)}", **CHAOS,
                 # a short wait in the handler, then retries through the delay queues: both meet the outage
                 "WARREN_SHOP_DATABASE_RETRY_SECONDS": "1", "WARREN_RETRY_MAX_ATTEMPTS": "12",
                 "WARREN_RETRY_INITIAL_DELAY_MS": "250", "WARREN_RETRY_MAX_DELAY_MS": "2000"},
                tmp_path, database_url=own_cluster.create_database("shop"))
    try:
        shop.start()
        shop.start_worker("payments")
        shop.start_api()
        before = [shop.order(("sku-apple", 1))[1]["order_id"] for _ in range(20)]
        rng = random.Random(7)
        during: list[str] = []
        stopped = threading.Event()

        def publish_into_the_outage() -> None:  # producers that do not go through the API
            stopped.wait(timeout=30)
            during.extend(place_directly(shop, baskets(rng)[:30]))

        publisher = threading.Thread(target=publish_into_the_outage)
        publisher.start()
        own_cluster.stop(immediately=True)  # mid-flight: as a crash would
        stopped.set()
        down = [shop.http("POST", "/api/v1/orders", {"customer": {"email": "a@b.co"},
                                                     "items": [{"sku": "sku-apple", "quantity": 1}]}),
                shop.http("GET", f"/api/v1/orders/{before[0]}"),
                shop.http("GET", "/readyz")]
        publisher.join(timeout=30)

        def logs() -> str:
            return "".join(w.log() for workers in shop.workers.values() for w in workers)

        deadline = time.monotonic() + 30  # the outage lasts until tasks have met it and been retried
        while len(re.findall(RETRIED, logs())) < 5:
            assert time.monotonic() < deadline, "no task met the outage: the test proved nothing"
            time.sleep(0.1)
        own_cluster.start()
        report = shop.ledger.wait(before + during, timeout=120, quiet_for=1.0)

        record_report(request, report)
        retried = len(re.findall(RETRIED, logs()))
        counts = check_the_store(shop, before + during)
        record_report(request, "store: " + " ".join(f"{k}={v}" for k, v in counts.items())
                      + f" tasks_retried_for_the_database={retried}")
        assert [status for status, _ in down] == [503, 503, 503]
        assert down[1][1]["detail"].startswith("database unavailable: ")
        assert len(during) == 30 and (report.completed + report.failed, report.dead_lettered, report.lost) == (50, 0, 0)
        assert "answers again" in logs()
        assert shop.http("GET", f"/api/v1/orders/{before[0]}")[1]["status"] == "completed"  # and reads work again
    finally:
        shop.stop()
