"""orders: places an order and decides its outcome from what inventory and payments report.

``place`` (from the API, through the tasks exchange) prices the order, emits ``order.created`` and
asks inventory to reserve the stock. The pool's queue also receives ``stock.rejected``,
``payment.completed`` and ``payment.failed``, which end the order as ``order.completed`` or
``order.failed`` (and release the stock of a declined order).
"""

from __future__ import annotations

from pydantic import Field

from warren import PermanentError, Pool, TaskContext
from warren_shop.roles import inventory
from warren_shop.roles.common import Customer, Item, Strict, shop, simulate

pool = Pool("orders", events=("stock.rejected", "payment.completed", "payment.failed"))


class PlaceOrder(Strict):
    order_id: str = Field(min_length=1, max_length=64)
    customer: Customer
    items: list[Item] = Field(min_length=1, max_length=50)


class StockRejected(Strict):
    order_id: str
    missing: list[str]
    customer: Customer


class PaymentCompleted(Strict):
    order_id: str
    amount_cents: int
    charge_id: str
    customer: Customer


class PaymentFailed(Strict):
    order_id: str
    reason: str
    customer: Customer


def price(items: list[Item]) -> int:
    catalog = shop().catalog
    unknown = [item.sku for item in items if item.sku not in catalog]
    if unknown:
        raise PermanentError(f"unknown SKUs: {', '.join(unknown)}")
    return sum(catalog[item.sku][0] * item.quantity for item in items)


@pool.task
def place(order: PlaceOrder, ctx: TaskContext) -> None:
    simulate("orders", ms=0)
    total = price(order.items)
    ctx.emit("order.created", {"order_id": order.order_id, "total_cents": total, "items": order.items})
    ctx.send(inventory.reserve, {**order.model_dump(mode="json"), "total_cents": total})


@pool.task("stock.rejected", schema=StockRejected)
def stock_rejected(event: StockRejected, ctx: TaskContext) -> None:
    ctx.emit("order.failed", {**event.model_dump(mode="json"), "reason": "out_of_stock"})


@pool.task("payment.completed", schema=PaymentCompleted)
def payment_completed(event: PaymentCompleted, ctx: TaskContext) -> None:
    ctx.emit("order.completed", event.model_dump(mode="json", exclude={"charge_id"}))


@pool.task("payment.failed", schema=PaymentFailed)
def payment_failed(event: PaymentFailed, ctx: TaskContext) -> None:
    ctx.emit("order.failed", event.model_dump(mode="json"))
    ctx.send(inventory.release, {"order_id": event.order_id})
