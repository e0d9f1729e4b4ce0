"""orders: places an order and decides its outcome from what inventory and payments report.

``place`` (from the API, through the tasks exchange) prices the order, makes sure its record
exists (the API writes it first; a producer that bypasses the API does not), emits
``order.created`` and asks inventory to reserve the stock. The pool's queue also receives
``stock.rejected``, ``payment.completed`` and ``payment.failed``: a rejection or a declined payment
ends the order as failed with a reason (``order.failed``, and the stock of a declined order is
released); a payment tells the customer (``order.paid``). The order is completed later, once it
has shipped and its confirmation e-mail is sent (``order.completed``, from whichever comes last).
"""

from __future__ import annotations

from pydantic import Field
from sqlalchemy.engine import Connection

from warren import PermanentError, Pool, TaskContext
from warren_shop.roles import inventory
from warren_shop.roles.common import Customer, Item, Strict, shop, simulate
from warren_shop.store import Cause, database
from warren_shop.store import orders as records

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
    try:
        total = price(order.items)
    except PermanentError:  # dead-lettered at once, with its reason; the record says failed
        database().transaction(lambda conn: _accept(conn, order, None, ctx, failure="unknown_sku"))
        raise
    database().transaction(lambda conn: _accept(conn, order, total, ctx))
    ctx.emit("order.created", {"order_id": order.order_id, "total_cents": total, "items": order.items})
    ctx.send(inventory.reserve, {**order.model_dump(mode="json"), "total_cents": total})


def _accept(conn: Connection, order: PlaceOrder, total: int | None, ctx: TaskContext, *,
            failure: str | None = None) -> None:
    cause = Cause.of(ctx)
    records.create(conn, order_id=order.order_id, customer=order.customer.model_dump(mode="json"),
                   items=[i.model_dump() for i in order.items], total_cents=total, cause=cause)
    if failure:
        records.record(conn, order.order_id, "failed", cause, reason=failure)


@pool.task("stock.rejected", schema=StockRejected)
def stock_rejected(event: StockRejected, ctx: TaskContext) -> None:
    fail(event.order_id, "out_of_stock", ctx)
    ctx.emit("order.failed", {**event.model_dump(mode="json"), "reason": "out_of_stock"})


@pool.task("payment.completed", schema=PaymentCompleted)
def payment_completed(event: PaymentCompleted, ctx: TaskContext) -> None:
    ctx.emit("order.paid", event.model_dump(mode="json", exclude={"charge_id"}))


@pool.task("payment.failed", schema=PaymentFailed)
def payment_failed(event: PaymentFailed, ctx: TaskContext) -> None:
    fail(event.order_id, event.reason, ctx)
    ctx.emit("order.failed", event.model_dump(mode="json"))
    ctx.send(inventory.release, {"order_id": event.order_id})


def fail(order_id: str, reason: str, ctx: TaskContext) -> None:
    database().transaction(lambda conn: records.record(conn, order_id, "failed", Cause.of(ctx), reason=reason))
