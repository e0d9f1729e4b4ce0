"""notifications: e-mail and SMS, each its own pool and queue (the notification service's message shapes).

Both take ``send`` tasks from the API (``POST /api/v1/notifications/send``). E-mail also tells the
customer how an order ended; SMS tells them it has shipped when they gave a phone number. Sending
is recorded by notification id, so a redelivered message is not sent twice.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from warren import Pool, TaskContext
from warren_shop.roles.common import Customer, Store, Strict, shop, simulate

email = Pool("email", events=("order.completed", "order.failed"))
sms = Pool("sms", events=("shipment.created",))

outbox = Store(
    "notifications",
    """CREATE TABLE IF NOT EXISTS sent (
        id TEXT PRIMARY KEY, channel TEXT NOT NULL, recipient TEXT NOT NULL, content TEXT NOT NULL);""",
)


class Notification(Strict):
    """The notification queue message: what the API accepted, with its id."""

    id: str
    type: Literal["email", "sms"]
    recipient: str = Field(min_length=3, max_length=254)
    content: str = Field(min_length=1, max_length=10_000)
    variables: dict[str, Any] = Field(default_factory=dict)
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


def deliver(*, channel: str, notification_id: str, recipient: str, content: str, ms: int, ctx: TaskContext) -> None:
    simulate(channel, ms=ms)
    with outbox.transaction() as conn:
        new = conn.execute(
            "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?)", (notification_id, channel, recipient, content)
        ).rowcount
    if new:
        ctx.emit("notification.sent", {"id": notification_id, "channel": channel})


def _render(content: str, variables: dict[str, Any]) -> str:
    for key, value in variables.items():
        content = content.replace("{{" + key + "}}", str(value))
    return content


@email.task("send", schema=Notification)
def send_email(n: Notification, ctx: TaskContext) -> None:
    deliver(channel="email", notification_id=n.id, recipient=n.recipient,
            content=_render(n.content, n.variables), ms=shop().email_ms, ctx=ctx)


@sms.task("send", schema=Notification)
def send_sms(n: Notification, ctx: TaskContext) -> None:
    deliver(channel="sms", notification_id=n.id, recipient=n.recipient,
            content=_render(n.content, n.variables), ms=shop().sms_ms, ctx=ctx)


@email.task("order.completed", schema=OrderEnded)
@email.task("order.failed", schema=OrderEnded)
def order_ended(event: OrderEnded, ctx: TaskContext) -> None:
    if event.customer is None:
        return
    outcome = "is confirmed" if event.reason is None else f"could not be completed ({event.reason})"
    deliver(channel="email", notification_id=f"order-{event.order_id}", recipient=event.customer.email,
            content=f"Your order {event.order_id} {outcome}.", ms=shop().email_ms, ctx=ctx)


@sms.task("shipment.created", schema=Shipped)
def shipped(event: Shipped, ctx: TaskContext) -> None:
    if event.customer.phone:
        deliver(channel="sms", notification_id=f"ship-{event.order_id}", recipient=event.customer.phone,
                content=f"Order {event.order_id} has shipped: {event.tracking}", ms=shop().sms_ms, ctx=ctx)
