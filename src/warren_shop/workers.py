"""What ``warren worker NAME`` loads for the shop's pools (its ``warren.pools`` entry points): the
pools, once the database is known to hold the schema this code was written for.

A worker started against an empty database, or one a newer version has migrated, exits 2 with one
line saying what to run, instead of failing every task it takes; a database that does not answer
within WARREN_SHOP_DATABASE_RETRY_SECONDS makes it exit 1. Loading its pool is the only start-up a
worker has (the runtime names no workload), so the check is here. The demo and the tests import
the roles themselves, which touches no database.
"""

from __future__ import annotations

from warren_shop.roles import analytics as _analytics
from warren_shop.roles import audit as _audit
from warren_shop.roles import inventory as _inventory
from warren_shop.roles import notifications as _notifications
from warren_shop.roles import orders as _orders
from warren_shop.roles import payments as _payments
from warren_shop.roles import shipping as _shipping
from warren_shop.store import database

database().require_schema()

orders = _orders.pool
inventory = _inventory.pool
payments = _payments.pool
shipping = _shipping.pool
email = _notifications.email
sms = _notifications.sms
analytics = _analytics.pool
audit = _audit.pool
