"""Two findings, through the roles' real handlers (``run_task``: the delivery handling a worker
runs) on a real database: a notification redelivered after its worker sent it and died before the
ack is not sent again; and an order whose stock is gone by the time it is reserved (two lines of
one SKU included) fails with a reason and an e-mail, instead of being retried until exhausted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.database import fresh_sqlite_url
from warren.testing import run_task
from warren_shop.roles import inventory, notifications, orders
from warren_shop.settings import shop_settings
from warren_shop.store import Cause, Store, database
from warren_shop.store import notifications as records
from warren_shop.store.engine import now
from warren_shop.store.stock import stock_catalog

CUSTOMER = {"email": "ada@example.com", "phone": None}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The roles' database for this test (the roles find it as a worker does, from the environment)."""
    url = fresh_sqlite_url(tmp_path)
    monkeypatch.setenv("WARREN_SHOP_DATABASE_URL", url)
    monkeypatch.setenv("WARREN_SHOP_EMAIL_MS", "0")
    shop_settings.cache_clear()
    database.cache_clear()
    s = Store(url)
    s.transaction(lambda conn: stock_catalog(conn, {"sku-rare-truffle": 3, "sku-tea": 100}))
    yield s
    s.close()
    shop_settings.cache_clear()
    database.cache_clear()


def rows(store: Store, statement: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in store.read(lambda conn: conn.execute(sa.text(statement)).all())]


def test_a_notification_redelivered_after_it_was_sent_is_not_sent_again(store: Store) -> None:
    message = {"id": "n-1", "type": "email", "recipient": "ada@example.com", "content": "Hi {{name}}",
               "variables": {"name": "Ada"}}
    first = run_task(notifications.email, "send", message, message_id="m-1")
    # Its worker died after sending, before the ack: the message comes again, from the suspect queue.
    again = run_task(notifications.email, "send", message, message_id="m-1", deaths=1)
    assert first.completed and again.completed
    assert rows(store, "SELECT notification_id, content FROM deliveries") == [("n-1", "Hi Ada")]
    assert rows(store, "SELECT status FROM notifications WHERE id = 'n-1'") == [("sent",)]


def test_a_notification_claimed_by_a_sender_that_died_is_not_sent_while_its_claim_holds(store: Store) -> None:
    message = {"id": "n-2", "type": "sms", "recipient": "+44 20 7946 0000", "content": "code 1234"}
    cause = Cause("m-2", 1, "dead-worker", now())
    lease = timedelta(seconds=shop_settings().send_lease_seconds)
    store.transaction(lambda conn: (
        records.create(conn, notification_id="n-2", channel="sms", recipient=message["recipient"],
                       content=message["content"], cause=cause),
        records.claim(conn, "n-2", token="dead-worker#1", cause=cause, lease=lease)))
    again = run_task(notifications.sms, "send", message, message_id="m-2", deaths=1)
    assert again.outcome == "retry"  # after the claim's lease, not now
    assert rows(store, "SELECT count(*) FROM deliveries") == [(0,)]


def test_stock_gone_at_reservation_fails_the_order_with_a_reason_and_an_email(store: Store) -> None:
    first = run_task(orders.pool, "place", {"order_id": "o-1", "customer": CUSTOMER,
                                            "items": [{"sku": "sku-rare-truffle", "quantity": 3}]})
    second = run_task(orders.pool, "place", {"order_id": "o-2", "customer": CUSTOMER, "items": [
        {"sku": "sku-rare-truffle", "quantity": 2}, {"sku": "sku-rare-truffle", "quantity": 2}]})
    assert first.completed and second.completed  # both passed the stock check: 3 truffles were there
    ((_, reserve_first, payload_first),) = first.tasks
    ((_, reserve_second, payload_second),) = second.tasks
    assert run_task(inventory.pool, reserve_first, payload_first).events[0][0] == "stock.reserved"
    reserved = run_task(inventory.pool, reserve_second, payload_second)
    assert reserved.completed  # a business answer, not a retry
    ((event, rejected),) = reserved.events
    assert (event, rejected["missing"]) == ("stock.rejected", ["sku-rare-truffle"])
    failed = run_task(orders.pool, "stock.rejected", rejected)
    ((event, ended),) = failed.events
    assert (event, ended["reason"]) == ("order.failed", "out_of_stock")
    assert run_task(notifications.email, "order.failed", ended).completed
    assert rows(store, "SELECT status, reason FROM orders WHERE order_id = 'o-2'") == [("failed", "out_of_stock")]
    assert rows(store, "SELECT recipient, content FROM deliveries") == [
        ("ada@example.com", "Your order o-2 could not be completed (out_of_stock).")]
    assert rows(store, "SELECT sku, available, reserved FROM stock WHERE sku = 'sku-rare-truffle'") == [
        ("sku-rare-truffle", 0, 3)]
