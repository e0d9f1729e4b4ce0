"""Stock: what is available, what is reserved for orders, and the reservations themselves.

Taking stock is a conditional update (``available = available - q WHERE available >= q``), so two
inventory pods reserving the last unit at once get one reservation and one rejection, never a
negative count; the check constraints of the ``stock`` table hold ``available + reserved ==
stocked`` whatever happens. A reservation is inserted before the stock is touched: a second
delivery of the same order waits on that row, then finds it and returns the same outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warren_shop.store import orders
from warren_shop.store.engine import Cause, insert_new
from warren_shop.store.schema import reservations, stock


@dataclass(frozen=True)
class Reservation:
    state: str  # reserved, rejected or released
    missing: list[str]  # the SKUs that were unknown or short, when rejected


def stock_catalog(conn: Connection, units: Mapping[str, int]) -> list[str]:
    """Stock the SKUs that have no stock yet (``db upgrade`` calls it); the SKUs it added."""
    return [sku for sku, count in units.items()
            if insert_new(conn, stock, {"sku": sku, "stocked": count, "available": count, "reserved": 0},
                          key=["sku"])]


def available(conn: Connection, skus: Iterable[str]) -> dict[str, int]:
    """Units available now, for the SKUs that are stocked."""
    return dict(conn.execute(sa.select(stock.c.sku, stock.c.available).where(stock.c.sku.in_(set(skus)))).all())


def reserve(conn: Connection, order_id: str, items: Iterable[tuple[str, int]], cause: Cause) -> Reservation:
    """Reserve every item of the order, or none: the order's one reservation, whoever asks twice."""
    wanted = Counter[str]()
    for sku, quantity in items:
        wanted[sku] += quantity
    lines = [{"sku": sku, "quantity": quantity} for sku, quantity in sorted(wanted.items())]
    if not insert_new(conn, reservations, {"order_id": order_id, "state": "pending", "items": lines, "missing": [],
                                           "message_id": cause.message_id, "at": cause.at}, key=["order_id"]):
        row = conn.execute(sa.select(reservations.c.state, reservations.c.missing)
                           .where(reservations.c.order_id == order_id)).one()
        return Reservation(row.state, list(row.missing))
    taken: list[tuple[str, int]] = []
    missing: list[str] = []
    for sku, quantity in sorted(wanted.items()):  # one order of locks for every pod: no deadlock
        if _move(conn, sku, quantity, to_reserved=True):
            taken.append((sku, quantity))
        else:
            missing.append(sku)
    if missing:
        for sku, quantity in taken:  # all or nothing, in this same transaction
            _move(conn, sku, quantity, to_reserved=False)
    state = "rejected" if missing else "reserved"
    conn.execute(reservations.update().where(reservations.c.order_id == order_id)
                 .values(state=state, missing=missing))
    if state == "reserved":
        orders.record(conn, order_id, "reserved", cause)
    return Reservation(state, missing)


def release(conn: Connection, order_id: str) -> bool:
    """Give a reserved order's units back (its payment failed); False if there was nothing to give."""
    row = conn.execute(
        reservations.update()
        .where(reservations.c.order_id == order_id, reservations.c.state == "reserved")
        .values(state="released").returning(reservations.c["items"])
    ).first()
    if row is None:
        return False
    for line in row[0]:
        _move(conn, line["sku"], line["quantity"], to_reserved=False)
    return True


def _move(conn: Connection, sku: str, quantity: int, *, to_reserved: bool) -> bool:
    """Move units between available and reserved, only if there are enough to move."""
    source, target = (stock.c.available, stock.c.reserved) if to_reserved else (stock.c.reserved, stock.c.available)
    moved = conn.execute(
        stock.update().where(stock.c.sku == sku, source >= quantity)
        .values({source: source - quantity, target: target + quantity})
    )
    return moved.rowcount == 1


def totals(conn: Connection) -> dict[str, tuple[int, int, int]]:
    """{sku: (stocked, available, reserved)}."""
    return {sku: (stocked, free, held) for sku, stocked, free, held in conn.execute(
        sa.select(stock.c.sku, stock.c.stocked, stock.c.available, stock.c.reserved)).all()}
