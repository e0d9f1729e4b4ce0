"""payments: charges an order once its stock is reserved.

Slow on purpose (2 to 5 s by default). Idempotent by order id: the simulated gateway records one
charge per order, so a payments worker killed mid-charge and redelivered never charges twice.
Orders above the credit limit are declined (``payment.failed``); transient faults are retried.
"""

from __future__ import annotations

import random
import uuid

from warren import Pool, TaskContext
from warren_shop.roles.common import Store, shop, simulate
from warren_shop.roles.inventory import Reserve

pool = Pool("payments", events=("stock.reserved",))

gateway = Store(
    "payments",
    """
    CREATE TABLE IF NOT EXISTS charges (
        order_id TEXT PRIMARY KEY, charge_id TEXT NOT NULL, amount_cents INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS attempts (order_id TEXT NOT NULL, task_id TEXT NOT NULL);
    """,
)


def charge_once(order_id: str, amount_cents: int) -> str:
    """The gateway's charge with an idempotency key: the same order always gets the same charge."""
    with gateway.transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO charges VALUES (?, ?, ?)", (order_id, f"ch_{uuid.uuid4().hex[:16]}", amount_cents)
        )
        (charge_id,) = conn.execute("SELECT charge_id FROM charges WHERE order_id = ?", (order_id,)).fetchone()
    return charge_id


@pool.task("stock.reserved", schema=Reserve)
def charge(order: Reserve, ctx: TaskContext) -> None:
    settings = shop()
    with gateway.transaction() as conn:  # every attempt is on record, so tests can see redeliveries
        conn.execute("INSERT INTO attempts VALUES (?, ?)", (order.order_id, ctx.task_id))
    simulate("payments", ms=random.randint(settings.payment_min_ms, settings.payment_max_ms))
    if order.total_cents > settings.credit_limit_cents:
        ctx.emit("payment.failed", {"order_id": order.order_id, "reason": "payment_declined",
                                    "customer": order.customer.model_dump(mode="json")})
        return
    charge_id = charge_once(order.order_id, order.total_cents)
    ctx.emit(
        "payment.completed",
        {"order_id": order.order_id, "amount_cents": order.total_cents, "charge_id": charge_id,
         "customer": order.customer.model_dump(mode="json")},
    )
