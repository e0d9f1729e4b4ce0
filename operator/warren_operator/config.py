"""The operator's settings: ``WARREN_OPERATOR_*`` environment variables, validated at start-up.

Read by ``__main__`` only, through ``warren.config.load``, which turns a bad value into one
readable line naming the variable (``__main__`` prints it and exits with status 2).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"],
                     BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value)]


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WARREN_OPERATOR_", extra="ignore", frozen=True)

    namespace: str = Field(default="", description="Namespace whose WorkerAutoscalers to watch; empty: all.")
    metrics_port: int = Field(default=9090, ge=0, le=65535,
                              description="Prometheus metrics at http://0.0.0.0:PORT/metrics; 0 disables them.")
    health_port: int = Field(default=8080, ge=1, le=65535,
                             description="kopf's liveness endpoint, http://0.0.0.0:PORT/healthz.")
    log_level: LogLevel = Field(default="INFO", description="Log level (any case).")

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_dns_label(cls, value: str) -> str:
        if value and not _DNS_LABEL.match(value):
            raise ValueError("must be a Kubernetes namespace name (lower-case letters, digits, '-'; at most 63)")
        return value

    @property
    def liveness_endpoint(self) -> str:
        return f"http://0.0.0.0:{self.health_port}/healthz"
