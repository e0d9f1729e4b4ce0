"""Alembic's environment: migrate on the connection, and in the transaction, the store hands over
(``warren_shop.store.migrate.upgrade``, which also makes concurrent upgrades take turns)."""

from __future__ import annotations

from alembic import context

from warren_shop.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations with `warren-shop db upgrade`, which hands them a connection")
context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
