"""The ``warren-shop`` command: the reference workload's API and its demo.

Its pools run with the runtime's own command (``warren worker payments``): they are registered as
``warren.pools`` entry points.
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
    demo = sub.add_parser("demo", help="run the shop pipeline end to end on this machine; account for every order")
    demo.add_argument("--selftest", action="store_true", help="run the runtime self-test burst instead")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def command(settings: Settings) -> int:
        if args.command == "api":
            from warren_shop.api.app import serve
            from warren_shop.settings import ApiSettings

            return serve(settings, load(ApiSettings))
        if args.selftest:
            from warren_shop.demo import selftest as scenario
        else:
            from warren_shop.demo import shop as scenario  # type: ignore[no-redef]
        return scenario.run(settings)

    return guarded(command, prog="warren-shop")


def main() -> None:
    sys.exit(run())
