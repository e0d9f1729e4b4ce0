"""The reference workload's own settings: the roles' (``WARREN_SHOP_*``) and the API's
(``WARREN_API_*``), validated at start-up like the runtime's: a bad value exits 2 naming it."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warren.config import load


class ShopSettings(BaseSettings):
    """The reference e-commerce workload: processing times, failure rates, catalog, state."""

    model_config = SettingsConfigDict(env_prefix="WARREN_SHOP_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("/tmp/warren-shop"),
        description="Where the roles keep their state (SQLite): stock, charges, labels, counts, audit log.",
    )
    payment_min_ms: int = Field(default=2000, ge=0, description="Shortest simulated payment, ms.")
    payment_max_ms: int = Field(default=5000, ge=0, description="Longest simulated payment, ms.")
    email_ms: int = Field(default=15_000, ge=0, description="Simulated time to send an e-mail, ms.")
    sms_ms: int = Field(default=300, ge=0, description="Simulated time to send an SMS, ms.")
    shipping_ms: int = Field(default=500, ge=0, description="Simulated time to create a label, ms.")
    failure_rate: dict[str, float] = Field(
        default_factory=dict,
        description='Simulated transient failure rate per role, e.g. {"payments": 0.1}; retried, then dead-lettered.',
    )
    credit_limit_cents: int = Field(default=50_000, ge=0, description="Payments above this are declined.")
    catalog: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {
            "sku-apple": (120, 10_000),
            "sku-bread": (350, 10_000),
            "sku-coffee": (899, 10_000),
            "sku-tea": (450, 10_000),
            "sku-rare-truffle": (25_000, 3),
        },
        description="Initial catalog: SKU -> (price in cents, units in stock).",
    )

    @field_validator("failure_rate")
    @classmethod
    def _rates_are_probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {role: rate for role, rate in value.items() if not 0.0 <= rate <= 1.0}
        if bad:
            raise ValueError(f"rates must be between 0 and 1, got {bad}")
        return value

    @model_validator(mode="after")
    def _payment_range(self) -> ShopSettings:
        if self.payment_max_ms < self.payment_min_ms:
            raise ValueError("WARREN_SHOP_PAYMENT_MAX_MS must not be below WARREN_SHOP_PAYMENT_MIN_MS")
        return self


class ApiSettings(BaseSettings):
    """The HTTP API role."""

    model_config = SettingsConfigDict(env_prefix="WARREN_API_", extra="ignore", frozen=True)

    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port to listen on.")
    stock_check_timeout: float = Field(default=2.0, gt=0, le=60, description="Inventory request/reply timeout, s.")
    connections: int = Field(default=4, ge=1, le=64, description="Broker connections shared by request handlers.")
    publish_timeout: float = Field(
        default=5.0, gt=0, le=60,
        description="How long a request may wait for the broker to confirm its message (reconnecting, or "
        "the broker blocking publishers in a memory or disk alarm, included) before it answers 503, s.",
    )


@functools.cache
def shop_settings() -> ShopSettings:
    """The roles' settings, read once per process (a worker checks them before it consumes)."""
    return load(ShopSettings)
