"""What the reference workload's roles share: settings, message shapes, simulated slowness and faults.

Their state is in the shop's store (``warren_shop.store``): one database that every worker of every
role shares, on one machine as across pods.
"""

from __future__ import annotations

import functools
import random
import time

from pydantic import BaseModel, ConfigDict, Field

from warren import RetryableError
from warren.config import Settings, load
from warren_shop.settings import shop_settings as shop

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9 ]{6,20}$"


# Read when a role is loaded, so a bad WARREN_SHOP_* value stops the worker at start-up (exit 2,
# naming the variable) instead of failing every task.
shop()


@functools.cache
def runtime() -> Settings:
    """The runtime's settings, as the worker running this role read them (its retry policy)."""
    return load(Settings)


class Strict(BaseModel):
    """Messages reject fields they do not know: a typo is a schema violation, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Customer(Strict):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    phone: str | None = Field(default=None, pattern=PHONE_PATTERN)


class Item(Strict):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=100)


def simulate(role: str, *, ms: int) -> None:
    """Take ``ms`` of (simulated) work, and fail transiently at the role's configured rate."""
    if ms:
        time.sleep(ms / 1000)
    rate = shop().failure_rate.get(role, 0.0)
    if rate and random.random() < rate:
        raise RetryableError(f"simulated {role} outage")
