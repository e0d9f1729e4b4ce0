"""The shop's Alembic migrations (run by ``warren-shop db upgrade``)."""
