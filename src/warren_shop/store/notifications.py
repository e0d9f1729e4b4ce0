"""A notification's status and its history: pending -> processing -> sent, or failed.

Sending is recorded before it happens: a sender first claims the notification (processing, with a
token of its own), then sends, then records it sent. A second delivery of the same message (its
first worker died, or lost its broker connection and is still sending) finds the claim and waits
until the claim's lease has passed, so two pods never send one notification at once. The one case
that can still send twice is a worker that dies after the provider accepted the message but before
it recorded that: only a provider that takes an idempotency key closes that gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from warren_shop.store.engine import Cause, insert_new, utc
from warren_shop.store.orders import history
from warren_shop.store.schema import notification_history, notifications


@dataclass(frozen=True)
class Claim:
    """What a sender may do: ``send`` it now, or not (``status`` says why), or ``wait`` seconds."""

    send: bool
    status: str
    wait: float = 0.0


def create(conn: Connection, *, notification_id: str, channel: str, recipient: str, content: str,
           cause: Cause, order_id: str | None = None) -> bool:
    """The notification's record, pending; False if it exists."""
    new = insert_new(conn, notifications, {
        "id": notification_id, "channel": channel, "recipient": recipient, "content": content,
        "order_id": order_id, "status": "pending", "created_at": cause.at, "updated_at": cause.at,
    }, key=["id"])
    record(conn, notification_id, "pending", cause)
    return new


def record(conn: Connection, notification_id: str, status: str, cause: Cause, *, reason: str | None = None) -> bool:
    """Add ``status`` to the history, once per message; False if this message had recorded it."""
    return insert_new(conn, notification_history, {
        "notification_id": notification_id, "status": status, "reason": reason,
        "message_id": cause.message_id, "attempt": cause.attempt, "worker": cause.worker, "at": cause.at,
    }, key=["notification_id", "status", "message_id"])


def claim(conn: Connection, notification_id: str, *, token: str, cause: Cause, lease: timedelta) -> Claim:
    """Take the notification for sending (``token`` names this attempt), unless it is sent,
    failed, or claimed by another attempt whose lease still holds."""
    row = conn.execute(
        sa.select(notifications.c.status, notifications.c.claim, notifications.c.claimed_at)
        .where(notifications.c.id == notification_id).with_for_update()
    ).one()
    if row.status in ("sent", "failed"):
        return Claim(send=False, status=row.status)
    if row.status == "processing" and row.claim != token:
        left = (utc(row.claimed_at) + lease - cause.at).total_seconds()
        if left > 0:
            return Claim(send=False, status="processing", wait=left)
    conn.execute(notifications.update().where(notifications.c.id == notification_id)
                 .values(status="processing", claim=token, claimed_at=cause.at, updated_at=cause.at))
    record(conn, notification_id, "processing", cause)
    return Claim(send=True, status="processing")


def release(conn: Connection, notification_id: str, *, token: str, cause: Cause) -> None:
    """The provider refused (nothing was sent): pending again, for the retry."""
    conn.execute(notifications.update()
                 .where(notifications.c.id == notification_id, notifications.c.claim == token,
                        notifications.c.status == "processing")
                 .values(status="pending", claim=None, claimed_at=None, updated_at=cause.at))


def finish(conn: Connection, notification_id: str, status: str, cause: Cause, *, reason: str | None = None) -> bool:
    """Record the notification ``sent`` or ``failed``, unless it already ended; True if this did."""
    ended = conn.execute(
        notifications.update()
        .where(notifications.c.id == notification_id, notifications.c.status.not_in(("sent", "failed")))
        .values(status=status, reason=reason, claim=None, updated_at=cause.at)
    ).rowcount == 1
    if ended:
        record(conn, notification_id, status, cause, reason=reason)
    return ended


def read(conn: Connection, notification_id: str) -> dict[str, Any] | None:
    """What the API shows of a notification: its channel, status and history."""
    row = conn.execute(sa.select(notifications).where(notifications.c.id == notification_id)).mappings().first()
    if row is None:
        return None
    return {
        "id": notification_id,
        "type": row["channel"],
        "status": row["status"],
        "reason": row["reason"],
        "order_id": row["order_id"],
        "created_at": utc(row["created_at"]).isoformat(),
        "updated_at": utc(row["updated_at"]).isoformat(),
        "history": history(conn, notification_history.c.notification_id, notification_id),
    }
