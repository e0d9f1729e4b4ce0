"""An order's status and its history.

accepted -> reserved -> paid -> shipped -> completed, or failed with a reason. Each step is written
by the role whose effect it records, in the same transaction as that effect (inventory writes
"reserved" with the reservation, payments "paid" with the charge), keyed by the message that
caused it: a redelivery finds its step recorded and records nothing. The status only moves to a
higher rank, so steps arriving out of order (shipping and e-mail run side by side) never move it
back. An order is completed once its history says both shipped and e-mailed; whichever of the two
comes second records it, the order's row locked so that exactly one does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warren_shop.store.engine import Cause, insert_new, now, utc
from warren_shop.store.schema import charges, labels, order_history, orders

RANK = {"accepted": 0, "reserved": 1, "paid": 2, "shipped": 3, "completed": 4, "failed": 4}
EMAILED = "emailed"  # a step of the history that does not change the status
TERMINAL = frozenset({"completed", "failed"})


def create(conn: Connection, *, order_id: str, customer: dict[str, Any], items: list[dict[str, Any]],
           total_cents: int | None, cause: Cause) -> bool:
    """The order's record, accepted by ``cause``; False if it exists (the same order again)."""
    new = insert_new(conn, orders, {
        "order_id": order_id, "status": "accepted", "status_rank": RANK["accepted"], "customer": customer,
        "items": items, "total_cents": total_cents, "created_at": cause.at, "updated_at": cause.at,
    }, key=["order_id"])
    if not new and total_cents is not None:  # the API accepted it; the orders role priced it
        conn.execute(orders.update().where(orders.c.order_id == order_id, orders.c.total_cents.is_(None))
                     .values(total_cents=total_cents))
    record(conn, order_id, "accepted", cause)
    return new


def record(conn: Connection, order_id: str, step: str, cause: Cause, *, reason: str | None = None) -> bool:
    """Add ``step`` to the history and move the status forward to it; False if this message had
    recorded it already (then nothing changes)."""
    added = insert_new(conn, order_history, {
        "order_id": order_id, "status": step, "reason": reason, "message_id": cause.message_id,
        "attempt": cause.attempt, "worker": cause.worker, "at": cause.at,
    }, key=["order_id", "status", "message_id"])
    if added and step in RANK:
        conn.execute(
            orders.update()
            .where(orders.c.order_id == order_id, orders.c.status_rank < RANK[step])
            .values(status=step, status_rank=RANK[step], reason=reason, updated_at=cause.at)
        )
    return added


def record_fulfilment(conn: Connection, order_id: str, step: str, cause: Cause) -> bool:
    """Record "shipped" or "emailed"; with both in the history, record "completed". True when
    this message completed the order (again, when it is redelivered after doing so): its handler
    announces ``order.completed``."""
    assert step in ("shipped", EMAILED), step
    # Shipping and e-mail may finish at the same moment on two pods: one waits for the other here,
    # then sees its step (SQLite needs no lock: every writer holds the database's).
    conn.execute(sa.select(orders.c.order_id).where(orders.c.order_id == order_id).with_for_update())
    cause = replace(cause, at=now())  # the time it is recorded, after the wait: the history stays in order
    record(conn, order_id, step, cause)
    steps = conn.execute(
        sa.select(order_history.c.status, order_history.c.message_id)
        .where(order_history.c.order_id == order_id,
               order_history.c.status.in_(("shipped", EMAILED, "completed")))
    ).all()
    completed_by = {message_id for status, message_id in steps if status == "completed"}
    if completed_by:
        return cause.message_id in completed_by
    if {"shipped", EMAILED} <= {status for status, _ in steps}:
        return record(conn, order_id, "completed", cause)
    return False


def read(conn: Connection, order_id: str) -> dict[str, Any] | None:
    """What the API shows of an order: status, history, items, payment, shipment."""
    order = conn.execute(sa.select(orders).where(orders.c.order_id == order_id)).mappings().first()
    if order is None:
        return None
    charge = conn.execute(sa.select(charges).where(charges.c.order_id == order_id)).mappings().first()
    label = conn.execute(sa.select(labels).where(labels.c.order_id == order_id)).mappings().first()
    return {
        "order_id": order_id,
        "status": order["status"],
        "reason": order["reason"],
        "items": order["items"],
        "total_cents": order["total_cents"],
        "created_at": utc(order["created_at"]).isoformat(),
        "updated_at": utc(order["updated_at"]).isoformat(),
        "payment": None if charge is None else {
            "charge_id": charge["charge_id"], "amount_cents": charge["amount_cents"],
            "charged_at": utc(charge["at"]).isoformat()},
        "shipment": None if label is None else {
            "tracking": label["tracking"], "created_at": utc(label["at"]).isoformat()},
        "history": history(conn, order_history.c.order_id, order_id),
    }


def history(conn: Connection, owner: sa.Column[str], key: str) -> list[dict[str, Any]]:
    """A record's history, oldest first: status, when, message, attempt, worker (and reason)."""
    table = owner.table
    rows = conn.execute(sa.select(table).where(owner == key).order_by(table.c.at, table.c.id)).mappings()
    return [_entry(row) for row in rows]


def _entry(row: Any) -> dict[str, Any]:
    entry = {"status": row["status"], "at": utc(row["at"]).isoformat(), "message_id": row["message_id"],
             "attempt": row["attempt"], "worker": row["worker"]}
    if row["reason"]:
        entry["reason"] = row["reason"]
    return entry
