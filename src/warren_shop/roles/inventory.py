"""inventory: answers stock checks over request/reply, and reserves and releases stock.

``check_stock`` is called by the API with ``reply_to`` set and answers at once (it only reads; a
database that does not answer is an answer too, which the API turns into a 503).
``reserve`` and ``release`` change the stock in the shared database with conditional updates, so
inventory pods side by side never sell a unit twice; each is idempotent by order id: a
redelivered reservation neither takes the stock twice nor emits a different outcome.
"""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from warren import Pool, TaskContext
from warren_shop.roles.common import Customer, Item, Strict, simulate
from warren_shop.store import Cause, StoreUnavailable, database, stock

pool = Pool("inventory")


class CheckStock(Strict):
    items: list[Item] = Field(min_length=1, max_length=50)


class Reserve(Strict):
    order_id: str
    customer: Customer
    items: list[Item] = Field(min_length=1, max_length=50)
    total_cents: int


class Release(Strict):
    order_id: str


@pool.task
def check_stock(request: CheckStock, ctx: TaskContext) -> dict[str, object]:
    wanted = Counter[str]()
    for item in request.items:
        wanted[item.sku] += item.quantity
    try:  # the caller waits seconds, not the store's retry window: say so at once
        units = database().read(lambda conn: stock.available(conn, wanted), retry_seconds=1.0)
    except StoreUnavailable as e:
        return {"available": False, "unknown": [], "missing": [], "unavailable": str(e)}
    unknown = [sku for sku in wanted if sku not in units]
    missing = [sku for sku, quantity in wanted.items() if sku in units and units[sku] < quantity]
    return {"available": not unknown and not missing, "unknown": unknown, "missing": missing}


@pool.task
def reserve(order: Reserve, ctx: TaskContext) -> None:
    simulate("inventory", ms=0)
    items = [(i.sku, i.quantity) for i in order.items]
    reservation = database().transaction(lambda conn: stock.reserve(conn, order.order_id, items, Cause.of(ctx)))
    if reservation.state == "rejected":
        ctx.emit("stock.rejected", {"order_id": order.order_id, "missing": reservation.missing,
                                    "customer": order.customer.model_dump(mode="json")})
    else:
        ctx.emit("stock.reserved", order.model_dump(mode="json"))


@pool.task
def release(request: Release, ctx: TaskContext) -> None:
    database().transaction(lambda conn: stock.release(conn, request.order_id))
    ctx.emit("stock.released", {"order_id": request.order_id})
