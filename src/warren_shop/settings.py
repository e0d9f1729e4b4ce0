"""The reference workload's own settings: the roles' (``WARREN_SHOP_*``) and the API's
(``WARREN_API_*``), validated at start-up like the runtime's: a bad value exits 2 naming it.

The database URL may come from a file, the way Kubernetes mounts Secrets
(``WARREN_SHOP_DATABASE_URL_FILE``), or carry no password and take it from one
(``WARREN_SHOP_DATABASE_PASSWORD_FILE``), as the broker URL does.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warren.config import load, read_secret_file
from warren.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:////tmp/warren-shop/shop.sqlite"


class ShopSettings(BaseSettings):
    """The reference e-commerce workload: its database, processing times, failure rates, catalog."""

    model_config = SettingsConfigDict(env_prefix="WARREN_SHOP_", extra="ignore", frozen=True)

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="The database every role and the API share: postgresql://user:password@host/db in "
        "production, or an SQLite file (sqlite:////path) on one machine. May carry credentials (never logged).",
    )
    database_url_file: Path | None = Field(
        default=None, description="File holding the database URL (a mounted Secret); wins over database_url."
    )
    database_password_file: Path | None = Field(
        default=None, description="File holding the database password (a mounted Secret); replaces the URL's."
    )
    database_retry_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="How long a role retries a database that does not answer before its task is retried "
        "through the queue (and how long a process waits for it at start-up), seconds.",
    )
    send_lease_seconds: float = Field(
        default=60.0, gt=0,
        description="How long a claim to send a notification holds: a redelivered notification whose sender "
        "died waits this long from the claim before it is sent again. Longer than the slowest send.",
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

    def resolved_database_url(self) -> str:
        """The database URL with a file-mounted URL or password applied. Secret: never log it."""
        url = read_secret_file(self.database_url_file, "WARREN_SHOP_DATABASE_URL_FILE")
        url = url or self.database_url.get_secret_value()
        password = read_secret_file(self.database_password_file, "WARREN_SHOP_DATABASE_PASSWORD_FILE")
        if password is None:
            return url
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(url).set(password=password).render_as_string(hide_password=False)
        except ArgumentError:
            raise ConfigError("invalid setting WARREN_SHOP_DATABASE_URL: not a database URL") from None



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
    auth: Literal["keys", "none"] = Field(
        default="keys",
        description="keys: every order and notification request needs an API key from WARREN_API_KEYS_FILE (the API "
        "refuses to start without one); none: open to anyone, for local development only.",
    )
    keys_file: Path | None = Field(
        default=None,
        description="File, or directory of files (a mounted Secret), holding the API keys: one per line, "
        "`NAME SCOPE[,SCOPE...] KEY` (KEY may be sha256:HEX). Re-read when it changes: rotation needs no restart.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024,
        description="Largest request body accepted, bytes (counted as it arrives, chunked or not); larger: 413.",
    )
    body_timeout: float = Field(
        default=10.0, gt=0, le=300, description="A request body must arrive within this long, s; else 408."
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=300,
        description="A request's headers must arrive within this long of its first byte, s; else the connection "
        "is closed.",
    )
    keep_alive_timeout: int = Field(default=5, ge=1, le=300, description="An idle keep-alive connection is closed "
                                    "after this long, s.")
    rate_limit: float = Field(
        default=20.0, gt=0, le=100_000,
        description="Requests per second each API key (or, without keys, each client address) may make, on "
        "average; past it: 429 with Retry-After.",
    )
    rate_burst: int = Field(default=40, ge=1, le=1_000_000, description="Requests a key may make at once before "
                            "the rate limit applies.")


@functools.cache
def shop_settings() -> ShopSettings:
    """The roles' settings, read once per process (a worker checks them before it consumes)."""
    return load(ShopSettings)
