"""The reference workload end to end: the API, every role, a real broker; every order accounted for."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from tests.support.fixtures import record_report
from tests.support.shop import EVERYTHING, EVERYTHING_TOO, Shop
from warren.config import Settings
from warren.topology import Names
from warren_shop.api.app import create_app
from warren_shop.settings import ApiSettings

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def shop(broker, tmp_path_factory):
    s = Shop({"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": f"s{secrets.token_hex(4)}"},
             tmp_path_factory.mktemp("shop"))
    try:
        s.start()
        s.start_worker("payments")  # two payment workers: payments are the slow role
        s.start_api()
        yield s
    finally:
        s.stop()


def rows(shop: Shop, db: str, sql: str) -> list[tuple]:
    with sqlite3.connect(shop.work_dir / "state" / f"{db}.sqlite") as conn:
        return conn.execute(sql).fetchall()


def drain_events(shop: Shop, subscription: str) -> list:
    from warren.broker import Session

    session = Session.open(shop.settings, name="test-drain")
    got = []
    try:
        while (d := session.get(Names(shop.settings.namespace).subscription(subscription))) is not None:
            got.append(d)
            session.ack(d.delivery_tag)
    finally:
        session.close()
    return got


def test_every_order_through_the_api_reaches_a_terminal_state(shop: Shop, request) -> None:
    # 12 ordinary orders, and 3 over the test's credit limit of 50.00 (declined by payments).
    placed = [shop.order(("sku-apple", 2), ("sku-tea", 1)) for _ in range(12)]
    declined = [shop.order(("sku-coffee", 10)) for _ in range(3)]
    assert {status for status, _ in placed + declined} == {202}
    ids = [body["order_id"] for _, body in placed]
    declined_ids = [body["order_id"] for _, body in declined]

    report = shop.ledger.wait(ids + declined_ids, timeout=60, quiet_for=0.5)

    record_report(request, report)
    assert (report.completed, report.failed, report.dead_lettered, report.duplicates, report.lost) == (12, 3, 0, 0, 0)
    assert report.failure_reasons == {"payment_declined": 3}
    charges = dict(rows(shop, "payments", "SELECT order_id, COUNT(*) FROM charges GROUP BY order_id"))
    assert {i: charges.get(i) for i in ids} == {i: 1 for i in ids}  # each completed order charged once
    assert not set(declined_ids) & set(charges)
    labels = {order_id for (order_id,) in rows(shop, "shipping", "SELECT order_id FROM labels")}
    assert set(ids) <= labels and not set(declined_ids) & labels  # a label only after payment


def test_fanout_subscribers_each_see_every_event_and_topic_subscriber_only_order_events(shop: Shop) -> None:
    drain_events(shop, EVERYTHING.name), drain_events(shop, EVERYTHING_TOO.name)
    ids = [shop.order(("sku-bread", 1))[1]["order_id"] for _ in range(5)]
    shop.ledger.wait(ids, timeout=60)
    # The last events of an order (emails, shipping, SMS) may still be on their way: poll.
    deadline = time.monotonic() + 30
    first: list = []
    second: list = []
    while time.monotonic() < deadline:
        first += drain_events(shop, EVERYTHING.name)
        second += drain_events(shop, EVERYTHING_TOO.name)
        kinds = Counter(d.type for d in first if d.correlation_id in ids)
        if kinds["notification.sent"] >= 10 and kinds["shipment.created"] == 5:
            break
        time.sleep(0.1)
    mine = {d.message_id: d.type for d in first if d.correlation_id in ids}
    assert {d.message_id: d.type for d in second if d.correlation_id in ids} == mine
    assert Counter(mine.values()) == {
        "order.created": 5, "stock.reserved": 5, "payment.completed": 5, "order.completed": 5,
        "shipment.created": 5, "notification.sent": 10,  # confirmation e-mail and shipping SMS
    }
    audit = rows(shop, "audit", "SELECT type, order_id FROM log")
    audited = Counter(t for t, order_id in audit if order_id in ids)
    assert audited == {"order.created": 5, "order.completed": 5}  # exactly the order.* events
    analytics = dict(rows(shop, "analytics", "SELECT message_id, type FROM seen"))
    assert {m: analytics.get(m) for m in mine} == mine  # analytics counted each one, once


def test_out_of_stock_is_409_and_nothing_is_published(shop: Shop) -> None:
    status, body = shop.order(("sku-rare-truffle", 4))  # 3 in stock
    assert (status, body) == (409, {"detail": "out of stock", "missing": ["sku-rare-truffle"]})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer": {"email": "ada@example.com"}, "items": []}, ["body", "items"]),
        ({"customer": {"email": "not-an-address"}, "items": [{"sku": "sku-tea", "quantity": 1}]},
         ["body", "customer", "email"]),
        ({"customer": {"email": "ada@example.com"}, "items": [{"sku": "sku-tea", "quantity": 0}]},
         ["body", "items", 0, "quantity"]),
        ({"customer": {"email": "ada@example.com"}, "items": [{"sku": "sku-moon-rock", "quantity": 1}]},
         ["body", "items", 0, "sku"]),
    ],
)
def test_an_invalid_order_is_422_with_the_field_errors(shop: Shop, body, field) -> None:
    status, reply = shop.http("POST", "/api/v1/orders", body)
    assert status == 422
    assert field in [error["loc"] for error in reply["detail"]]


def test_a_notification_is_accepted_and_sent(shop: Shop) -> None:
    status, body = shop.http("POST", "/api/v1/notifications/send",
                             {"type": "email", "recipient": "grace@example.com", "content": "Hi {{name}}",
                              "variables": {"name": "Grace"}})
    assert status == 202 and body["status"] == "pending"
    deadline = time.monotonic() + 20
    while not rows(shop, "notifications", f"SELECT content FROM sent WHERE id = '{body['id']}'"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert rows(shop, "notifications", f"SELECT content FROM sent WHERE id = '{body['id']}'") == [("Hi Grace",)]
    assert shop.http("POST", "/api/v1/notifications/send",
                     {"type": "sms", "recipient": "not a phone", "content": "x"})[0] == 422


def test_a_payments_worker_killed_mid_task_loses_nothing_and_charges_once(shop: Shop, request) -> None:
    slow = shop.start_worker("payments", WARREN_SHOP_PAYMENT_MIN_MS="1500", WARREN_SHOP_PAYMENT_MAX_MS="1500")
    for w in shop.workers["payments"][:-1]:  # only the slow one takes payments now
        w.signal(15)
        w.wait(timeout=10)
    ids = [shop.order(("sku-apple", 1))[1]["order_id"] for _ in range(3)]
    deadline = time.monotonic() + 20
    while not rows_exist(shop, ids):
        assert time.monotonic() < deadline, "no payment started"
        time.sleep(0.02)
    slow.kill()  # mid-charge: it sleeps 1.5 s per payment
    replacement = shop.start_worker("payments")

    report = shop.ledger.wait(ids, timeout=60, quiet_for=0.5)

    record_report(request, report)
    assert (report.completed, report.dead_lettered, report.duplicates, report.lost) == (3, 0, 0, 0)
    charges = Counter(o for (o,) in rows(shop, "payments", "SELECT order_id FROM charges") if o in ids)
    attempts = Counter(o for (o,) in rows(shop, "payments", "SELECT order_id FROM attempts") if o in ids)
    assert charges == {i: 1 for i in ids}
    assert max(attempts.values()) == 2  # the killed worker's order was handled twice, charged once
    assert replacement.alive()


def rows_exist(shop: Shop, ids: list[str]) -> bool:
    return any(o in ids for (o,) in rows(shop, "payments", "SELECT order_id FROM attempts"))


def test_inventory_not_answering_is_a_clean_503(broker) -> None:
    settings = Settings(_env_file=None, broker_url=broker.amqp_url, namespace=f"n{secrets.token_hex(4)}")
    from warren.broker import Session
    from warren.topology import apply
    from warren_shop import pipeline as workload

    session = Session.open(settings, name="test")
    apply(session, workload.build_topology(settings))
    session.close()
    with TestClient(create_app(settings, ApiSettings(stock_check_timeout=0.5))) as client:
        reply = client.post("/api/v1/orders", json={"customer": {"email": "a@b.co"},
                                                    "items": [{"sku": "sku-tea", "quantity": 1}]})
    assert reply.status_code == 503
    assert reply.json() == {"detail": "inventory did not answer within 0.5s; the order was not placed"}
    session = Session.open(settings, name="test")
    assert session.queue_depth(f"{settings.namespace}.orders")[0] == 0  # nothing half-published
    session.close()


def test_broker_unavailable_is_503_and_not_ready() -> None:
    settings = Settings(_env_file=None, broker_url="amqp://guest:secret-pw@127.0.0.1:1/%2F")
    with TestClient(create_app(settings, ApiSettings())) as client:
        placed = client.post("/api/v1/orders", json={"customer": {"email": "a@b.co"},
                                                     "items": [{"sku": "sku-tea", "quantity": 1}]})
        assert placed.status_code == 503
        assert placed.json()["detail"].startswith(
            "broker unavailable (connecting to 127.0.0.1:1: ConnectionRefusedError"
        )
        assert "secret-pw" not in placed.text
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").json() == {"status": "ok"}
