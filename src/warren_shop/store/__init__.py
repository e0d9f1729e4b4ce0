"""The shop's store: the state every role and the API share, in one database (PostgreSQL, or SQLite
on one machine), through SQLAlchemy Core, with Alembic migrations (``warren-shop db upgrade``).

``engine`` connects and survives outages, ``schema`` holds the tables, and one module per kind of
record says how it may change: ``orders`` and ``notifications`` (status and history),
``stock``, ``effects`` (charges, labels, deliveries, analytics, audit) and ``idempotency``.
"""

from warren_shop.store.engine import Cause, SchemaMismatch, Store, StoreUnavailable, database

__all__ = ["Cause", "SchemaMismatch", "Store", "StoreUnavailable", "database"]
