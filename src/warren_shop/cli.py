"""The ``warren-shop`` command: the reference workload's API, its database and its demo.

Its pools run with the runtime's own command (``warren worker payments``): they are registered as
``warren.pools`` entry points.

Exit status (as ``warren``'s): 0 success; 1 the broker or the database could not be reached;
2 bad configuration or usage, or a database schema this version does not know.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from warren.cli import guarded
from warren.config import Settings, load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warren-shop", description="Warren's reference e-commerce workload.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="serve the HTTP API (WARREN_API_HOST, WARREN_API_PORT)")
    db = sub.add_parser("db", help="the shop's database (WARREN_SHOP_DATABASE_URL)")
    db_sub = db.add_subparsers(dest="action", required=True)
    upgrade = db_sub.add_parser(
        "upgrade", help="migrate the database to this version's schema and stock the catalog's new SKUs "
        "(idempotent; several at once take turns)")
    upgrade.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                         help="how long to wait for the database (default WARREN_SHOP_DATABASE_RETRY_SECONDS)")
    demo = sub.add_parser("demo", help="run the shop pipeline end to end on this machine; account for every order")
    demo.add_argument("--selftest", action="store_true", help="run the runtime self-test burst instead")
    demo.add_argument("--keep", action="store_true",
                      help="keep the shop running after its table (the dashboard, `warren dlq`) until Ctrl-C")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def command(settings: Settings) -> int:
        if args.command == "api":
            from warren_shop.api.app import serve
            from warren_shop.settings import ApiSettings

            return serve(settings, load(ApiSettings))
        if args.command == "db":
            return upgrade(wait=args.wait)
        if args.selftest:
            from warren_shop.demo import selftest

            return selftest.run(settings)
        from warren_shop.demo import shop

        return shop.run(settings, keep=args.keep)

    return guarded(command, prog="warren-shop")


def upgrade(*, wait: float | None = None) -> int:
    """``warren-shop db upgrade``: the schema to this version's, then the catalog's SKUs stocked."""
    from warren_shop.settings import shop_settings
    from warren_shop.store import Store
    from warren_shop.store.stock import stock_catalog

    settings = shop_settings()
    store = Store(settings.resolved_database_url(), name="warren-shop db upgrade",
                  retry_seconds=settings.database_retry_seconds if wait is None else wait)
    try:
        before, after = store.upgrade()
        stocked = store.transaction(
            lambda conn: stock_catalog(conn, {sku: units for sku, (_price, units) in settings.catalog.items()}))
    finally:
        store.close()
    change = "already current" if before == after else f"upgraded from {', '.join(before) or 'an empty database'}"
    print(f"warren-shop: database {store.display_url} at schema {', '.join(after)} ({change}); "
          f"{len(stocked)} SKU(s) stocked{': ' + ', '.join(stocked) if stocked else ''}")
    return 0


def main() -> None:
    sys.exit(run())
