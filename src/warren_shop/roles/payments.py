"""payments: charges an order once its stock is reserved.

Slow on purpose (2 to 5 s by default). Exactly one charge per order, whichever pod runs it and
however often: the charges table's key is the order, so a payments worker killed mid-charge and
redelivered elsewhere never charges twice; the order's "paid" step is written with the charge.
Orders above the credit limit are declined (``payment.failed``); transient faults are retried.
"""

from __future__ import annotations

import random

from warren import Pool, TaskContext
from warren_shop.roles.common import shop, simulate
from warren_shop.roles.inventory import Reserve
from warren_shop.store import Cause, database, effects

pool = Pool("payments", events=("stock.reserved",))


@pool.task("stock.reserved", schema=Reserve)
def charge(order: Reserve, ctx: TaskContext) -> None:
    settings = shop()
    store = database()
    # Every attempt is on record, so that redeliveries can be seen (the demo counts them).
    store.transaction(lambda conn: effects.note_payment_attempt(conn, order.order_id, Cause.of(ctx)))
    simulate("payments", ms=random.randint(settings.payment_min_ms, settings.payment_max_ms))
    if order.total_cents > settings.credit_limit_cents:
        ctx.emit("payment.failed", {"order_id": order.order_id, "reason": "payment_declined",
                                    "customer": order.customer.model_dump(mode="json")})
        return
    charge_id = store.transaction(
        lambda conn: effects.charge_once(conn, order.order_id, order.total_cents, Cause.of(ctx)))
    ctx.emit(
        "payment.completed",
        {"order_id": order.order_id, "amount_cents": order.total_cents, "charge_id": charge_id,
         "customer": order.customer.model_dump(mode="json")},
    )
