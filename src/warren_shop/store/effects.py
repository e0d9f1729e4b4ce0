"""The roles' effects in the world, each exactly once across pods, by a unique key rather than a
read-then-write: one charge per order, one label per paid order, one count per event, one audit
entry per event (the audit log refuses changes), and what the simulated provider delivered.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warren_shop.store import orders
from warren_shop.store.engine import Cause, insert_new
from warren_shop.store.schema import analytics_events, audit_log, charges, deliveries, labels, payment_attempts


def note_payment_attempt(conn: Connection, order_id: str, cause: Cause) -> None:
    """Every attempt at a payment is on record, so that redeliveries can be seen."""
    conn.execute(payment_attempts.insert().values(order_id=order_id, message_id=cause.message_id,
                                                  attempt=cause.attempt, worker=cause.worker, at=cause.at))


def charge_once(conn: Connection, order_id: str, amount_cents: int, cause: Cause) -> str:
    """Charge the order, once whoever asks: its charge id. The order is paid in the same transaction."""
    insert_new(conn, charges, {"order_id": order_id, "charge_id": f"ch_{uuid.uuid4().hex[:16]}",
                               "amount_cents": amount_cents, "message_id": cause.message_id, "at": cause.at},
               key=["order_id"])
    orders.record(conn, order_id, "paid", cause)
    return str(conn.execute(sa.select(charges.c.charge_id).where(charges.c.order_id == order_id)).scalar_one())


def label_once(conn: Connection, order_id: str, cause: Cause) -> tuple[str, bool]:
    """The order's one shipping label: (tracking number, whether this completed the order)."""
    insert_new(conn, labels, {"order_id": order_id, "tracking": f"TRK{uuid.uuid4().hex[:12].upper()}",
                              "message_id": cause.message_id, "at": cause.at}, key=["order_id"])
    completed = orders.record_fulfilment(conn, order_id, "shipped", cause)
    tracking = conn.execute(sa.select(labels.c.tracking).where(labels.c.order_id == order_id)).scalar_one()
    return str(tracking), completed


def deliver(conn: Connection, *, notification_id: str, channel: str, recipient: str, content: str,
            cause: Cause) -> None:
    """The simulated provider accepts a message: one row per message it was handed."""
    conn.execute(deliveries.insert().values(notification_id=notification_id, channel=channel,
                                            recipient=recipient, content=content, at=cause.at))


def count_event(conn: Connection, event_type: str, cause: Cause) -> bool:
    """Count one event, by its message id; False if it was counted already."""
    return insert_new(conn, analytics_events, {"message_id": cause.message_id, "type": event_type, "at": cause.at},
                      key=["message_id"])


def event_counts(conn: Connection) -> dict[str, int]:
    return {t: n for t, n in conn.execute(
        sa.select(analytics_events.c.type, sa.func.count()).group_by(analytics_events.c.type)).all()}


def append_audit(conn: Connection, event_type: str, body: Any, cause: Cause) -> bool:
    """Append one event to the audit log, by its message id; False if it is there already."""
    order_id = body.get("order_id") if isinstance(body, dict) else None
    return insert_new(conn, audit_log, {"message_id": cause.message_id, "type": event_type,
                                        "order_id": order_id if isinstance(order_id, str) else None,
                                        "body": body, "at": cause.at}, key=["message_id"])
