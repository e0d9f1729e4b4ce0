"""shipping: creates a shipping label once an order's payment has completed (never before)."""

from __future__ import annotations

import uuid

from warren import Pool, TaskContext
from warren_shop.roles.common import Customer, Store, Strict, shop, simulate

pool = Pool("shipping", events=("payment.completed",))

labels = Store("shipping", "CREATE TABLE IF NOT EXISTS labels (order_id TEXT PRIMARY KEY, tracking TEXT NOT NULL);")


class Paid(Strict):
    order_id: str
    amount_cents: int
    charge_id: str
    customer: Customer


@pool.task("payment.completed", schema=Paid)
def create_label(paid: Paid, ctx: TaskContext) -> None:
    simulate("shipping", ms=shop().shipping_ms)
    with labels.transaction() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO labels VALUES (?, ?)", (paid.order_id, f"TRK{uuid.uuid4().hex[:12].upper()}")
        )
        (tracking,) = conn.execute("SELECT tracking FROM labels WHERE order_id = ?", (paid.order_id,)).fetchone()
    ctx.emit(
        "shipment.created",
        {"order_id": paid.order_id, "tracking": tracking, "customer": paid.customer.model_dump(mode="json")},
    )
