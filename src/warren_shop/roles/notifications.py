"""notifications: e-mail and SMS, each its own pool and queue (the notification service's message shapes).

Both take ``send`` tasks from the API (``POST /api/v1/notifications/send``). E-mail also tells the
customer that an order is paid for (the confirmation, after which the order may complete) or has
failed; SMS tells them it has shipped when they gave a phone number.

Every notification has a record (pending -> processing -> sent or failed) and is claimed before it
is sent: one e-mail or SMS per notification, however often its message is delivered and however
many workers run (``warren_shop.store.notifications``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Literal

from warren import Pool, RetryableError, TaskContext
from warren_shop.roles.common import Customer, Strict, runtime, shop, simulate
from warren_shop.roles.templates import NotificationBody, render
from warren_shop.store import Cause, database, effects
from warren_shop.store import notifications as records
from warren_shop.store import orders as order_records

email = Pool("email", events=("order.paid", "order.failed"))
sms = Pool("sms", events=("shipment.created",))


class Notification(NotificationBody):
    """The notification queue message: what the API accepted, with its id. One that would render past
    the cap is a schema violation: dead-lettered, never rendered."""

    id: str
    status: Literal["pending"] = "pending"


class OrderEnded(Strict):
    order_id: str
    amount_cents: int | None = None
    reason: str | None = None
    missing: list[str] | None = None
    customer: Customer | None = None


class Shipped(Strict):
    order_id: str
    tracking: str
    customer: Customer


def deliver(*, channel: str, notification_id: str, recipient: str, content: str, ms: int, ctx: TaskContext,
            order_id: str | None = None) -> bool:
    """Send the notification unless it was sent (or failed) already; True once it is sent."""
    store = database()
    token = f"{ctx.task_id}#{uuid.uuid4().hex[:12]}"  # this attempt, and no other
    lease = timedelta(seconds=shop().send_lease_seconds)

    def claim(conn: Any) -> records.Claim:
        cause = Cause.of(ctx)
        records.create(conn, notification_id=notification_id, channel=channel, recipient=recipient,
                       content=content, order_id=order_id, cause=cause)
        return records.claim(conn, notification_id, token=token, cause=cause, lease=lease)

    claimed = store.transaction(claim)
    if claimed.wait:
        raise RetryableError(f"notification {notification_id} is being sent by another attempt; "
                             f"its claim lapses in {claimed.wait:.1f}s", delay=claimed.wait)
    if claimed.send:
        try:
            simulate(channel, ms=ms)  # the provider: slow, and sometimes refuses (nothing sent)
        except RetryableError as refused:
            last_attempt, reason = ctx.attempt >= runtime().retry_max_attempts, str(refused)[:200]

            def give_back(conn: Any) -> None:
                if last_attempt:  # it will be dead-lettered: the record says why
                    records.finish(conn, notification_id, "failed", Cause.of(ctx), reason=reason)
                else:
                    records.release(conn, notification_id, token=token, cause=Cause.of(ctx))

            store.transaction(give_back)
            raise
        # It was sent: that must be on record, or a retry would send it again. Wait for a database
        # that went away as long as the claim holds other senders off.
        window = max(store.retry_seconds, lease.total_seconds())
        store.transaction(lambda conn: effects.deliver(conn, notification_id=notification_id, channel=channel,
                                                       recipient=recipient, content=content, cause=Cause.of(ctx)),
                          retry_seconds=window)
        store.transaction(lambda conn: records.finish(conn, notification_id, "sent", Cause.of(ctx)),
                          retry_seconds=window)
    elif claimed.status != "sent":
        return False  # it failed before (the API could not queue it): not sent now
    event = {"id": notification_id, "channel": channel}
    ctx.emit("notification.sent", {**event, "order_id": order_id} if order_id else event)
    return True


@email.task("send", schema=Notification)
def send_email(n: Notification, ctx: TaskContext) -> None:
    deliver(channel="email", notification_id=n.id, recipient=n.recipient,
            content=render(n.content, n.variables), ms=shop().email_ms, ctx=ctx)


@sms.task("send", schema=Notification)
def send_sms(n: Notification, ctx: TaskContext) -> None:
    deliver(channel="sms", notification_id=n.id, recipient=n.recipient,
            content=render(n.content, n.variables), ms=shop().sms_ms, ctx=ctx)


@email.task("order.paid", schema=OrderEnded)
@email.task("order.failed", schema=OrderEnded)
def order_ended(event: OrderEnded, ctx: TaskContext) -> None:
    if event.customer is None:
        return
    outcome = "is confirmed" if event.reason is None else f"could not be completed ({event.reason})"
    sent = deliver(channel="email", notification_id=f"order-{event.order_id}", recipient=event.customer.email,
                   content=f"Your order {event.order_id} {outcome}.", ms=shop().email_ms, ctx=ctx,
                   order_id=event.order_id)
    if sent and event.reason is None:
        completed = database().transaction(
            lambda conn: order_records.record_fulfilment(conn, event.order_id, order_records.EMAILED, Cause.of(ctx)))
        if completed:
            ctx.emit("order.completed", {"order_id": event.order_id})


@sms.task("shipment.created", schema=Shipped)
def shipped(event: Shipped, ctx: TaskContext) -> None:
    if event.customer.phone:
        deliver(channel="sms", notification_id=f"ship-{event.order_id}", recipient=event.customer.phone,
                content=f"Order {event.order_id} has shipped: {event.tracking}", ms=shop().sms_ms, ctx=ctx,
                order_id=event.order_id)
