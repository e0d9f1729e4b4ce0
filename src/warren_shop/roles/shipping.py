"""shipping: creates an order's one shipping label once its payment has completed (never before).

The label and the order's "shipped" step are one transaction; if the confirmation e-mail has gone
out already, the order is completed here and ``order.completed`` announced.
"""

from __future__ import annotations

from warren import Pool, TaskContext
from warren_shop.roles.common import Customer, Strict, shop, simulate
from warren_shop.store import Cause, database, effects

pool = Pool("shipping", events=("payment.completed",))


class Paid(Strict):
    order_id: str
    amount_cents: int
    charge_id: str
    customer: Customer


@pool.task("payment.completed", schema=Paid)
def create_label(paid: Paid, ctx: TaskContext) -> None:
    simulate("shipping", ms=shop().shipping_ms)
    tracking, completed = database().transaction(lambda conn: effects.label_once(conn, paid.order_id, Cause.of(ctx)))
    ctx.emit(
        "shipment.created",
        {"order_id": paid.order_id, "tracking": tracking, "customer": paid.customer.model_dump(mode="json")},
    )
    if completed:
        ctx.emit("order.completed", {"order_id": paid.order_id})
