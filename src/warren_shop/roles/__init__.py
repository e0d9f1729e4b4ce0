"""Roles: one module per worker pool, schemas beside handlers."""
