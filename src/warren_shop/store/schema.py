"""The shop's tables (SQLAlchemy Core): one database that every role and the API share.

Exactly-once lives in the schema rather than in the roles' code: a primary key makes a second
charge, label or count impossible; check constraints keep stock from going negative and keep
``available + reserved == stocked``; a history row is unique per (record, status, message id), so a
redelivered message never records a step twice. What the roles add are conditional updates (stock
is taken only ``WHERE available >= quantity``; a status only moves forward).

The migrations (``migrations/versions``) create exactly these tables; a test compares the two.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
})

# An autoincrementing key on both: SQLite only autoincrements a column declared INTEGER PRIMARY KEY.
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ORDER_ID = sa.String(64)
MESSAGE_ID = sa.String(255)


def _cause() -> list[sa.Column[object]]:
    """Who made a change: the message, its attempt, the worker (or API process), and when."""
    return [
        sa.Column("message_id", MESSAGE_ID, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    ]


def _history(name: str, owner: str, owner_type: sa.types.TypeEngine[str], references: str) -> sa.Table:
    """The steps a record went through: one row per (record, status, message)."""
    return sa.Table(
        name, metadata,
        sa.Column("id", Serial, primary_key=True, autoincrement=True),
        sa.Column(owner, owner_type, sa.ForeignKey(references), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200)),
        *_cause(),
        sa.UniqueConstraint(owner, "status", "message_id"),
    )


orders = sa.Table(
    "orders", metadata,
    sa.Column("order_id", ORDER_ID, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_rank", sa.SmallInteger, nullable=False),  # a status only moves to a higher rank
    sa.Column("reason", sa.String(200)),
    sa.Column("customer", sa.JSON, nullable=False),
    sa.Column("items", sa.JSON, nullable=False),
    sa.Column("total_cents", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

order_history = _history("order_history", "order_id", ORDER_ID, "orders.order_id")

notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("order_id", ORDER_ID),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(200)),
    sa.Column("claim", sa.String(300)),  # who is sending it now: recorded before the send
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

notification_history = _history("notification_history", "notification_id", sa.String(100), "notifications.id")

stock = sa.Table(
    "stock", metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("stocked", sa.Integer, nullable=False),
    sa.Column("available", sa.Integer, nullable=False),
    sa.Column("reserved", sa.Integer, nullable=False),
    sa.CheckConstraint("available >= 0", name="available_not_negative"),
    sa.CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    sa.CheckConstraint("available + reserved = stocked", name="nothing_lost"),
)

reservations = sa.Table(
    "reservations", metadata,
    sa.Column("order_id", ORDER_ID, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # reserved, rejected, released
    sa.Column("items", sa.JSON, nullable=False),
    sa.Column("missing", sa.JSON, nullable=False),
    sa.Column("message_id", MESSAGE_ID, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

payment_attempts = sa.Table(
    "payment_attempts", metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("order_id", ORDER_ID, nullable=False, index=True),
    *_cause(),
)

charges = sa.Table(
    "charges", metadata,
    sa.Column("order_id", ORDER_ID, primary_key=True),  # one charge per order, whoever asks
    sa.Column("charge_id", sa.String(32), nullable=False, unique=True),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("message_id", MESSAGE_ID, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

labels = sa.Table(
    "labels", metadata,
    sa.Column("order_id", ORDER_ID, primary_key=True),  # one label per paid order
    sa.Column("tracking", sa.String(32), nullable=False, unique=True),
    sa.Column("message_id", MESSAGE_ID, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# What the simulated e-mail and SMS provider delivered: one row per message it accepted, never
# deduplicated, so that a notification sent twice would show here.
deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("notification_id", sa.String(100), nullable=False, index=True),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

analytics_events = sa.Table(
    "analytics_events", metadata,
    sa.Column("message_id", MESSAGE_ID, primary_key=True),  # each event counted once
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# Append-only: the migration adds triggers that refuse UPDATE and DELETE.
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("message_id", MESSAGE_ID, nullable=False, unique=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("order_id", ORDER_ID),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("scope", sa.String(32), primary_key=True),  # the endpoint
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(64), nullable=False),  # the order or notification it creates
    sa.Column("status_code", sa.Integer),  # none while the first request is still being answered
    sa.Column("response", sa.JSON),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
)
