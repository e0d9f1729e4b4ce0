"""Effects exactly once, on SQLite and PostgreSQL: whatever runs twice, or side by side on two
pods (threads here, each with its own connection), charges, labels, counts and reserves once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from warren_shop.store import Cause, Store, effects, orders, stock
from warren_shop.store.schema import analytics_events, audit_log, charges, labels


def cause(message_id: str, worker: str = "w1") -> Cause:
    return Cause(message_id, 1, worker, datetime.now(UTC))


def side_by_side(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i in range(count) on several threads at once; their results."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(work, range(count)))


def new_order(store: Store, order_id: str) -> None:
    store.transaction(lambda conn: orders.create(conn, order_id=order_id, customer={"email": "a@b.co"},
                                                 items=[{"sku": "sku-tea", "quantity": 1}], total_cents=450,
                                                 cause=cause(order_id, "api")))


def test_an_order_is_charged_once_however_many_pods_charge_it(store: Store) -> None:
    new_order(store, "o-1")
    charge_ids = side_by_side(12, lambda i: store.transaction(
        lambda conn: effects.charge_once(conn, "o-1", 450, cause(f"m{i % 3}", f"pod{i}"))))
    assert len(set(charge_ids)) == 1
    assert store.read(lambda conn: conn.execute(sa.select(sa.func.count()).select_from(charges)).scalar()) == 1
    history = store.read(lambda conn: orders.read(conn, "o-1"))
    assert history is not None and history["status"] == "paid"
    assert sorted(h["message_id"] for h in history["history"] if h["status"] == "paid") == ["m0", "m1", "m2"]


def test_concurrent_reservations_never_oversell_and_the_units_add_up(store: Store) -> None:
    store.transaction(lambda conn: stock.stock_catalog(conn, {"sku-truffle": 5, "sku-tea": 100}))
    for n in range(20):
        new_order(store, f"o-{n}")
    outcomes = side_by_side(20, lambda n: store.transaction(
        lambda conn: stock.reserve(conn, f"o-{n}", [("sku-tea", 1), ("sku-truffle", 1)], cause(f"r{n}"))).state)
    assert sorted(outcomes).count("reserved") == 5
    totals = store.read(stock.totals)
    assert totals == {"sku-truffle": (5, 0, 5), "sku-tea": (100, 95, 5)}  # rejected orders took nothing


def test_a_redelivered_reservation_takes_the_stock_once_and_answers_the_same(store: Store) -> None:
    store.transaction(lambda conn: stock.stock_catalog(conn, {"sku-tea": 3}))
    new_order(store, "o-1")
    first, again = (store.transaction(lambda conn: stock.reserve(conn, "o-1", [("sku-tea", 2)], cause("r1")))
                    for _ in range(2))
    assert first == again and first.state == "reserved"
    assert store.read(stock.totals) == {"sku-tea": (3, 1, 2)}
    assert store.transaction(lambda conn: stock.release(conn, "o-1")) is True
    assert store.transaction(lambda conn: stock.release(conn, "o-1")) is False  # released once
    assert store.read(stock.totals) == {"sku-tea": (3, 3, 0)}


def test_a_short_order_is_rejected_whole_and_names_what_is_missing(store: Store) -> None:
    store.transaction(lambda conn: stock.stock_catalog(conn, {"sku-tea": 3, "sku-truffle": 1}))
    new_order(store, "o-1")
    reservation = store.transaction(lambda conn: stock.reserve(
        conn, "o-1", [("sku-tea", 2), ("sku-truffle", 1), ("sku-truffle", 1), ("sku-moon-rock", 1)], cause("r1")))
    assert (reservation.state, reservation.missing) == ("rejected", ["sku-moon-rock", "sku-truffle"])
    assert store.read(stock.totals) == {"sku-tea": (3, 3, 0), "sku-truffle": (1, 1, 0)}


def test_stock_can_never_go_negative_nor_lose_units(store: Store) -> None:
    store.transaction(lambda conn: stock.stock_catalog(conn, {"sku-tea": 3}))
    for change in ("available = -1, reserved = 4", "available = 2"):
        with pytest.raises(sa.exc.IntegrityError):
            store.transaction(lambda conn, change=change: conn.execute(sa.text(f"UPDATE stock SET {change}")))


def test_one_label_per_order_and_one_count_per_event(store: Store) -> None:
    new_order(store, "o-1")
    tracking = side_by_side(8, lambda i: store.transaction(
        lambda conn: effects.label_once(conn, "o-1", cause("s1")))[0])
    counted = side_by_side(8, lambda i: store.transaction(
        lambda conn: effects.count_event(conn, "order.created", cause("o-1/orders.e1"))))
    assert len(set(tracking)) == 1 and counted.count(True) == 1
    assert store.read(lambda conn: conn.execute(sa.select(sa.func.count()).select_from(labels)).scalar()) == 1
    assert store.read(lambda conn: conn.execute(
        sa.select(sa.func.count()).select_from(analytics_events)).scalar()) == 1


def test_the_audit_log_is_append_only(store: Store) -> None:
    assert store.transaction(lambda conn: effects.append_audit(conn, "order.created", {"order_id": "o-1"},
                                                               cause("e1"))) is True
    assert store.transaction(lambda conn: effects.append_audit(conn, "order.created", {"order_id": "o-1"},
                                                               cause("e1"))) is False
    for statement in (audit_log.update().values(type="order.forged"), audit_log.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            store.transaction(lambda conn, s=statement: conn.execute(s))
    assert store.read(lambda conn: conn.execute(sa.select(audit_log.c.type)).scalars().all()) == ["order.created"]
