"""The shop on this machine, for the demo, the tests and the benchmark: its roles and API as
processes (``LocalShop``, ``LocalApi``), and a private PostgreSQL cluster to share between them as
pods share one in production (``LocalPostgres``)."""

from warren_shop.local.api import LocalApi
from warren_shop.local.postgres import LocalPostgres, postgresql_installed
from warren_shop.local.shop import LocalShop, db_upgrade

__all__ = ["LocalApi", "LocalPostgres", "LocalShop", "db_upgrade", "postgresql_installed"]
