"""inventory: answers stock checks over request/reply, and applies stock changes.

``check_stock`` is called by the API with ``reply_to`` set and answers at once. ``reserve`` and
``release`` change the stock, each idempotent by order id: a redelivered reservation neither
takes the stock twice nor emits a different outcome.
"""

from __future__ import annotations

import json
import sqlite3

from pydantic import Field

from warren import Pool, TaskContext
from warren_shop.roles.common import Customer, Item, Store, Strict, shop, simulate

pool = Pool("inventory")

store = Store(
    "inventory",
    """
    CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, units INTEGER NOT NULL CHECK (units >= 0));
    CREATE TABLE IF NOT EXISTS reservations (
        order_id TEXT PRIMARY KEY, items TEXT NOT NULL, state TEXT NOT NULL);
    """,
)


class CheckStock(Strict):
    items: list[Item] = Field(min_length=1, max_length=50)


class Reserve(Strict):
    order_id: str
    customer: Customer
    items: list[Item] = Field(min_length=1, max_length=50)
    total_cents: int


class Release(Strict):
    order_id: str


def _seed(conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO stock (sku, units) VALUES (?, ?)",
        [(sku, units) for sku, (_price, units) in shop().catalog.items()],
    )


def _shortfall(conn: sqlite3.Connection, items: list[Item]) -> tuple[list[str], list[str]]:
    """(SKUs we do not sell, SKUs without enough units) for these items."""
    units = dict(conn.execute("SELECT sku, units FROM stock").fetchall())
    unknown = [i.sku for i in items if i.sku not in units]
    missing = [i.sku for i in items if i.sku in units and units[i.sku] < i.quantity]
    return unknown, missing


@pool.task
def check_stock(request: CheckStock, ctx: TaskContext) -> dict[str, object]:
    with store.transaction() as conn:
        _seed(conn)
        unknown, missing = _shortfall(conn, request.items)
    return {"available": not unknown and not missing, "unknown": unknown, "missing": missing}


@pool.task
def reserve(order: Reserve, ctx: TaskContext) -> None:
    simulate("inventory", ms=0)
    with store.transaction() as conn:
        _seed(conn)
        done = conn.execute("SELECT state FROM reservations WHERE order_id = ?", (order.order_id,)).fetchone()
        if done is None:
            unknown, missing = _shortfall(conn, order.items)
            if unknown or missing:
                state = "rejected"
            else:
                state = "reserved"
                conn.executemany(
                    "UPDATE stock SET units = units - ? WHERE sku = ?", [(i.quantity, i.sku) for i in order.items]
                )
            items = json.dumps([i.model_dump() for i in order.items])
            conn.execute("INSERT INTO reservations VALUES (?, ?, ?)", (order.order_id, items, state))
            missing_skus = unknown + missing
        else:
            state = done[0]
            missing_skus = [i.sku for i in order.items] if state == "rejected" else []
    if state == "rejected":
        ctx.emit("stock.rejected", {"order_id": order.order_id, "missing": missing_skus,
                                    "customer": order.customer.model_dump(mode="json")})
    else:
        ctx.emit("stock.reserved", order.model_dump(mode="json"))


@pool.task
def release(request: Release, ctx: TaskContext) -> None:
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT items FROM reservations WHERE order_id = ? AND state = 'reserved'", (request.order_id,)
        ).fetchone()
        if row is not None:
            conn.executemany(
                "UPDATE stock SET units = units + ? WHERE sku = ?",
                [(i["quantity"], i["sku"]) for i in json.loads(row[0])],
            )
            conn.execute("UPDATE reservations SET state = 'released' WHERE order_id = ?", (request.order_id,))
    ctx.emit("stock.released", {"order_id": request.order_id})
