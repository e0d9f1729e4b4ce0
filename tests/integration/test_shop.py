"""The reference workload end to end: the API, every role, a real broker and a real PostgreSQL that
every worker shares; every order accounted for, and its history readable through the API."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.database import fresh_postgres_url
from tests.support.fixtures import record_report
from tests.support.shop import EVERYTHING, EVERYTHING_TOO, Shop
from warren.broker import Session
from warren.config import Settings
from warren.topology import Names, apply
from warren_shop import pipeline as workload
from warren_shop.api.app import create_app
from warren_shop.settings import ApiSettings
from warren_shop.store import Store

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


@pytest.fixture(scope="module")
def shop(broker, postgres, tmp_path_factory):
    s = Shop({"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": f"s{secrets.token_hex(4)}"},
             tmp_path_factory.mktemp("shop"), database_url=fresh_postgres_url(postgres))
    try:
        s.start()
        s.start_worker("payments")  # two payment workers: payments are the slow role
        s.start_api()
        yield s
    finally:
        s.stop()


def drain_events(shop: Shop, subscription: str) -> list:
    session = Session.open(shop.settings, name="test-drain")
    got = []
    try:
        while (d := session.get(Names(shop.settings.namespace).subscription(subscription))) is not None:
            got.append(d)
            session.ack(d.delivery_tag)
    finally:
        session.close()
    return got


def statuses(order: dict[str, Any]) -> list[str]:
    return [entry["status"] for entry in order["history"]]


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
    charges = dict(shop.rows("SELECT order_id, COUNT(*) FROM charges GROUP BY order_id"))
    assert {i: charges.get(i) for i in ids} == {i: 1 for i in ids}  # each completed order charged once
    assert not set(declined_ids) & set(charges)
    labels = {order_id for (order_id,) in shop.rows("SELECT order_id FROM labels")}
    assert set(ids) <= labels and not set(declined_ids) & labels  # a label only after payment


def test_every_orders_status_history_is_complete_and_readable_through_the_api(shop: Shop) -> None:
    ids = [shop.order(("sku-bread", 1), ("sku-tea", 2))[1]["order_id"] for _ in range(4)]
    declined = shop.order(("sku-coffee", 10))[1]["order_id"]
    shop.ledger.wait([*ids, declined], timeout=60)

    for order_id in ids:
        status, order = shop.http("GET", f"/api/v1/orders/{order_id}")
        assert status == 200 and order["status"] == "completed"
        steps = statuses(order)
        assert steps[:3] == ["accepted", "reserved", "paid"] and steps[-1] == "completed"
        assert sorted(steps[3:5]) == ["emailed", "shipped"]  # side by side: either may come first
        assert len(steps) == 6  # each step once, however often its message was delivered
        for entry in order["history"]:
            assert entry["message_id"] and entry["attempt"] >= 1 and entry["worker"] and entry["at"]
        assert order["history"][0]["message_id"] == order_id  # the API recorded it, for the message it published
        assert [e["at"] for e in order["history"]] == sorted(e["at"] for e in order["history"])
        assert order["items"] == [{"sku": "sku-bread", "quantity": 1}, {"sku": "sku-tea", "quantity": 2}]
        assert order["total_cents"] == 350 + 2 * 450
        assert order["payment"]["amount_cents"] == 1250 and order["payment"]["charge_id"].startswith("ch_")
        assert order["shipment"]["tracking"].startswith("TRK")
    status, order = shop.http("GET", f"/api/v1/orders/{declined}")
    assert (status, order["status"], order["reason"]) == (200, "failed", "payment_declined")
    assert statuses(order) == ["accepted", "reserved", "failed"]
    assert order["payment"] is None and order["shipment"] is None
    confirmation = shop.http("GET", f"/api/v1/notifications/order-{ids[0]}/status")[1]
    assert confirmation["status"] == "sent" and statuses(confirmation) == ["pending", "processing", "sent"]


def test_an_unknown_order_or_notification_is_404(shop: Shop) -> None:
    assert shop.http("GET", "/api/v1/orders/no-such-order") == (404, {"detail": "no order 'no-such-order'"})
    assert shop.http("GET", "/api/v1/notifications/nope/status") == (404, {"detail": "no notification 'nope'"})


def test_the_same_idempotency_key_and_body_get_the_first_answer_and_place_one_order(shop: Shop) -> None:
    body = {"customer": {"email": "ada@example.com"}, "items": [{"sku": "sku-apple", "quantity": 1}]}
    key = {"Idempotency-Key": f"checkout-{secrets.token_hex(4)}"}
    orders_before = shop.rows("SELECT COUNT(*) FROM orders")[0][0]

    first = shop.http("POST", "/api/v1/orders", body, headers=key)
    again = shop.http("POST", "/api/v1/orders", body, headers=key)
    other = shop.http("POST", "/api/v1/orders", {**body, "items": [{"sku": "sku-apple", "quantity": 2}]},
                      headers=key)

    assert first[0] == 202 and again == first
    assert other == (422, {"detail": "this Idempotency-Key was used with another request body"})
    assert shop.rows("SELECT COUNT(*) FROM orders")[0][0] == orders_before + 1
    assert shop.ledger.wait([first[1]["order_id"]], timeout=60).completed == 1


def test_fanout_subscribers_each_see_every_event_and_topic_subscriber_only_order_events(shop: Shop) -> None:
    drain_events(shop, EVERYTHING.name), drain_events(shop, EVERYTHING_TOO.name)
    ids = [shop.order(("sku-bread", 1))[1]["order_id"] for _ in range(5)]
    shop.ledger.wait(ids, timeout=60)
    # The last events of an order (the shipping SMS) may still be on their way: poll.
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
        "order.created": 5, "stock.reserved": 5, "payment.completed": 5, "order.paid": 5, "order.completed": 5,
        "shipment.created": 5, "notification.sent": 10,  # confirmation e-mail and shipping SMS
    }
    audited = Counter(t for t, order_id in shop.rows("SELECT type, order_id FROM audit_log") if order_id in ids)
    assert audited == {"order.created": 5, "order.paid": 5, "order.completed": 5}  # exactly the order.* events
    analytics = dict(shop.rows("SELECT message_id, type FROM analytics_events"))
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


def test_a_notification_is_pending_then_processing_then_sent_once(shop: Shop) -> None:
    status, body = shop.http("POST", "/api/v1/notifications/send",
                             {"type": "email", "recipient": "grace@example.com", "content": "Hi {{name}}",
                              "variables": {"name": "Grace"}})
    assert status == 202 and body["status"] == "pending"
    deadline = time.monotonic() + 20
    while (record := shop.http("GET", f"/api/v1/notifications/{body['id']}/status")[1])["status"] != "sent":
        assert time.monotonic() < deadline, record
        time.sleep(0.05)
    assert statuses(record) == ["pending", "processing", "sent"] and record["type"] == "email"
    sent = shop.rows(f"SELECT content FROM deliveries WHERE notification_id = '{body['id']}'")
    assert [tuple(r) for r in sent] == [("Hi Grace",)]  # the provider was handed it once
    assert shop.http("POST", "/api/v1/notifications/send",
                     {"type": "sms", "recipient": "not a phone", "content": "x"})[0] == 422


def test_a_payments_worker_killed_mid_task_loses_nothing_and_charges_once(shop: Shop, request) -> None:
    slow = shop.start_worker("payments", WARREN_SHOP_PAYMENT_MIN_MS="1500", WARREN_SHOP_PAYMENT_MAX_MS="1500")
    for w in shop.workers["payments"][:-1]:  # only the slow one takes payments now
        w.signal(15)
        w.wait(timeout=10)
    ids = [shop.order(("sku-apple", 1))[1]["order_id"] for _ in range(3)]
    deadline = time.monotonic() + 20
    while not any(o in ids for (o,) in shop.rows("SELECT order_id FROM payment_attempts")):
        assert time.monotonic() < deadline, "no payment started"
        time.sleep(0.02)
    slow.kill()  # mid-charge: it sleeps 1.5 s per payment
    replacement = shop.start_worker("payments")

    report = shop.ledger.wait(ids, timeout=60, quiet_for=0.5)

    record_report(request, report)
    assert (report.completed, report.dead_lettered, report.duplicates, report.lost) == (3, 0, 0, 0)
    charges = Counter(o for (o,) in shop.rows("SELECT order_id FROM charges") if o in ids)
    attempts = Counter(o for (o,) in shop.rows("SELECT order_id FROM payment_attempts") if o in ids)
    assert charges == {i: 1 for i in ids}
    assert max(attempts.values()) == 2  # the killed worker's order was handled twice, charged once
    assert replacement.alive()


def test_inventory_not_answering_is_a_clean_503(broker, tmp_path) -> None:
    settings = Settings(_env_file=None, broker_url=broker.amqp_url, namespace=f"n{secrets.token_hex(4)}")
    session = Session.open(settings, name="test")
    apply(session, workload.build_topology(settings))
    session.close()
    store = Store(f"sqlite:///{tmp_path / 'shop.sqlite'}")
    store.upgrade()
    with TestClient(create_app(settings, ApiSettings(auth="none", stock_check_timeout=0.5), store)) as client:
        reply = client.post("/api/v1/orders", json={"customer": {"email": "a@b.co"},
                                                    "items": [{"sku": "sku-tea", "quantity": 1}]})
    assert reply.status_code == 503
    assert reply.json() == {"detail": "inventory did not answer within 0.5s; the order was not placed"}
    session = Session.open(settings, name="test")
    assert session.queue_depth(f"{settings.namespace}.orders")[0] == 0  # nothing half-published
    session.close()


def test_broker_unavailable_is_503_and_not_ready(tmp_path) -> None:
    settings = Settings(_env_file=None, broker_url="amqp://guest:secret-pw@127.0.0.1:1/%2F")
    store = Store(f"sqlite:///{tmp_path / 'shop.sqlite'}")
    store.upgrade()
    with TestClient(create_app(settings, ApiSettings(auth="none"), store)) as client:
        placed = client.post("/api/v1/orders", json={"customer": {"email": "a@b.co"},
                                                     "items": [{"sku": "sku-tea", "quantity": 1}]})
        assert placed.status_code == 503
        assert placed.json()["detail"].startswith(
            "broker unavailable (connecting to 127.0.0.1:1: ConnectionRefusedError"
        )
        assert "secret-pw" not in placed.text
        sent = client.post("/api/v1/notifications/send", json={"type": "email", "recipient": "a@b.co",
                                                               "content": "hi"})
        assert sent.status_code == 503 and sent.json()["detail"].endswith("the notification was not queued")
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").json() == {"status": "ok"}
    # The notification's record says what became of it: its publish failed.
    (record,) = store.read(lambda conn: list(conn.exec_driver_sql("SELECT status, reason FROM notifications")))
    assert tuple(record) == ("failed", "not_published")


def test_the_database_unavailable_is_503_for_reads_and_writes_and_nothing_is_published(broker) -> None:
    settings = Settings(_env_file=None, broker_url=broker.amqp_url, namespace=f"n{secrets.token_hex(4)}")
    session = Session.open(settings, name="test")
    apply(session, workload.build_topology(settings))
    down = Store("postgresql://warren@127.0.0.1:1/shop")  # nothing listens on port 1
    with TestClient(create_app(settings, ApiSettings(auth="none"), down)) as client:
        sent = client.post("/api/v1/notifications/send", json={"type": "email", "recipient": "a@b.co",
                                                               "content": "hi"}, headers={"Idempotency-Key": "k1"})
        read = client.get("/api/v1/orders/o-1")
        ready = client.get("/readyz")
    assert sent.status_code == read.status_code == ready.status_code == 503
    assert sent.json()["detail"].startswith("database unavailable: ")
    assert session.queue_depth(f"{settings.namespace}.email")[0] == 0  # nothing published without its record
    session.close()


def test_an_idempotent_notification_is_published_once(broker, tmp_path) -> None:
    settings = Settings(_env_file=None, broker_url=broker.amqp_url, namespace=f"n{secrets.token_hex(4)}")
    session = Session.open(settings, name="test")
    apply(session, workload.build_topology(settings))
    store = Store(f"sqlite:///{tmp_path / 'shop.sqlite'}")
    store.upgrade()
    body = {"type": "sms", "recipient": "+44 20 7946 0000", "content": "Your code is 1234"}
    with TestClient(create_app(settings, ApiSettings(auth="none"), store)) as client:
        first, again = (client.post("/api/v1/notifications/send", json=body, headers={"Idempotency-Key": "otp-1"})
                        for _ in range(2))
    assert first.status_code == again.status_code == 202 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert session.queue_depth(f"{settings.namespace}.sms")[0] == 1  # no worker: exactly one message waits
    session.close()
