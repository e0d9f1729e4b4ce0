"""The reference workload running for real, as the tests run it: quick roles, and two fanout
subscribers that see every event (``warren_shop.local.LocalShop`` does the rest)."""

from __future__ import annotations

from pathlib import Path

from warren.topology import Subscription
from warren_shop.local import LocalShop

FAST = {
    "WARREN_SHOP_PAYMENT_MIN_MS": "100",
    "WARREN_SHOP_PAYMENT_MAX_MS": "300",
    "WARREN_SHOP_EMAIL_MS": "50",
    "WARREN_SHOP_SMS_MS": "10",
    "WARREN_SHOP_SHIPPING_MS": "20",
    "WARREN_SHOP_CREDIT_LIMIT_CENTS": "5000",
    "WARREN_RETRY_INITIAL_DELAY_MS": "100",
    "WARREN_RETRY_MAX_ATTEMPTS": "3",
}
EVERYTHING = Subscription("everything", fanout=True)
EVERYTHING_TOO = Subscription("everything-too", fanout=True)


class Shop(LocalShop):
    def __init__(self, env: dict[str, str], work_dir: Path, *, database_url: str) -> None:
        super().__init__({**FAST, "WARREN_SHOP_DATABASE_URL": database_url, **env}, work_dir,
                         subscriptions=(EVERYTHING, EVERYTHING_TOO))
