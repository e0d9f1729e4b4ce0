"""Settings: the only reader of the environment.

Every knob is a ``WARREN_*`` environment variable (or a ``.env`` file). Credentials may instead be
read from files, the way Kubernetes mounts Secrets (``WARREN_BROKER_URL_FILE``,
``WARREN_BROKER_PASSWORD_FILE``). ``load_settings`` turns validation errors into a ``ConfigError``
whose one-line message names the setting and never echoes a secret value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from warren.errors import ConfigError

ENV_PREFIX = "WARREN_"
_S = TypeVar("_S", bound=BaseSettings)
_SECRET_FIELDS = frozenset({"broker_url", "broker_password"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class Settings(BaseSettings):
    """Everything a Warren process can be told, with safe defaults for a local broker."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    broker_url: SecretStr = Field(
        default=SecretStr("amqp://localhost:5672/%2F"),
        description="AMQP URL of the broker, or several separated by commas (the nodes of a cluster: each "
        "process tries them in its own shuffled order and fails over); may carry credentials (never logged).",
    )
    broker_url_file: Path | None = Field(
        default=None, description="File holding the broker URL (a mounted Secret); wins over broker_url."
    )
    broker_username: str | None = Field(default=None, description="Overrides the URL's user name.")
    broker_password: SecretStr | None = Field(default=None, description="Overrides the URL's password.")
    broker_password_file: Path | None = Field(
        default=None, description="File holding the broker password (a mounted Secret)."
    )
    namespace: str = Field(
        default="warren",
        description="Prefix of every exchange and queue name, so several systems share one vhost.",
    )
    heartbeat: int = Field(default=30, ge=1, le=600, description="AMQP heartbeat interval, seconds.")
    connect_timeout: float = Field(default=10.0, gt=0, description="TCP connect and AMQP handshake timeout, seconds.")
    prefetch: int = Field(default=1, ge=1, le=1000, description="Unacked messages per worker; also its concurrency.")
    queue_type: Literal["quorum", "classic"] = Field(
        default="quorum", description="Work queue type; classic only for brokers without quorum queues."
    )
    delivery_limit: int = Field(
        default=5, ge=1, le=1000,
        description="Deliveries a message may crash its worker on before it is dead-lettered as a crash loop.",
    )
    retry_max_attempts: int = Field(
        default=5, ge=1, le=30, description="Handler attempts before a failing task is dead-lettered."
    )
    retry_initial_delay_ms: int = Field(default=1000, ge=1, description="Delay before the first retry, ms.")
    retry_multiplier: float = Field(default=2.0, ge=1.0, le=10.0, description="Growth of the delay per attempt.")
    retry_max_delay_ms: int = Field(default=300_000, ge=1, description="Upper bound of a retry delay, ms.")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Larger message bodies are dead-lettered as oversized."
    )
    max_task_seconds: float | None = Field(
        default=None, gt=0, le=86_400,
        description="The pool's longest task, seconds. A worker then asks the broker (3.12+) not to time its "
        "deliveries out before 3 x this + 60 s (x-consumer-timeout), and stops refreshing its health file "
        "while a task has run longer than 3 x this, so a stuck worker is restarted.",
    )
    publish_timeout: float = Field(
        default=30.0, gt=0, le=600,
        description="How long a producer may take to publish one message with its confirm, reconnecting and "
        "retrying included (a broker that blocks publishers in an alarm counts), seconds.",
    )
    shutdown_grace: float = Field(
        default=30.0, gt=0, description="Seconds to finish in-flight tasks after SIGTERM before giving up."
    )
    reconnect_initial_delay: float = Field(default=0.5, gt=0, description="First reconnect delay, seconds.")
    reconnect_max_delay: float = Field(default=30.0, gt=0, description="Cap of the reconnect delay, seconds.")
    worker_name: str | None = Field(
        default=None, max_length=200,
        description="How this worker names itself in logs, connection names and events (default host:pid).",
    )
    declare_topology: bool = Field(
        default=True,
        description="Workers declare their pool's exchanges, queues and bindings on every connection, which "
        "needs the configure permission on them. False: they only check that each exists (passive declares "
        "need no permission), for a user that may not configure anything; `warren topology apply` then "
        "declares them with other credentials, as the Helm chart's topology step does.",
    )
    health_file: Path | None = Field(
        default=None,
        description="Exists while the worker is connected and consuming; its mtime is refreshed every few "
        "seconds, so exec probes can check readiness (exists) and liveness (recent).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text` lines, or `json`: one object per line with the message id, correlation id, pool, task, "
        "attempt, outcome and duration of the message it is about.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Serve Prometheus metrics on this port (/metrics); none when unset.",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _delays_are_ordered(self) -> Settings:
        if self.retry_max_delay_ms < self.retry_initial_delay_ms:
            raise ValueError("WARREN_RETRY_MAX_DELAY_MS must not be below WARREN_RETRY_INITIAL_DELAY_MS")
        if self.reconnect_max_delay < self.reconnect_initial_delay:
            raise ValueError("WARREN_RECONNECT_MAX_DELAY must not be below WARREN_RECONNECT_INITIAL_DELAY")
        return self

    def retry_delays_ms(self) -> tuple[int, ...]:
        """The delay before each retry: attempt 1 failed -> first delay, and so on. Never empty
        (with one attempt, the first delay still serves tasks that allow more)."""
        return retry_delays_ms(
            attempts=max(2, self.retry_max_attempts),
            initial_ms=self.retry_initial_delay_ms,
            multiplier=self.retry_multiplier,
            cap_ms=self.retry_max_delay_ms,
        )

    def resolved_broker_url(self) -> str:
        """The first broker URL with file-mounted credentials applied. Secret: never log it."""
        return self.resolved_broker_urls()[0]

    def resolved_broker_urls(self) -> list[str]:
        """Every broker URL, in the order given, with file-mounted credentials applied to each.
        Secret: never log them (``redact_url`` each)."""
        text = read_secret_file(self.broker_url_file, "WARREN_BROKER_URL_FILE") or self.broker_url.get_secret_value()
        urls = [u for u in re.split(r"[,\s]+", text) if u]
        if not urls:
            raise ConfigError("WARREN_BROKER_URL: no broker URL given")
        password = read_secret_file(self.broker_password_file, "WARREN_BROKER_PASSWORD_FILE")
        if password is None and self.broker_password is not None:
            password = self.broker_password.get_secret_value()
        return [self._with_credentials(url, password) for url in urls]

    def _with_credentials(self, url: str, password: str | None) -> str:
        if self.broker_username is None and password is None:
            return url
        parts = urlsplit(url)
        user = self.broker_username if self.broker_username is not None else unquote(parts.username or "")
        if password is None:
            password = unquote(parts.password or "")
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def retry_delays_ms(*, attempts: int, initial_ms: int, multiplier: float, cap_ms: int) -> tuple[int, ...]:
    """Exponential backoff, capped: one delay between each pair of consecutive attempts."""
    return tuple(min(cap_ms, math.ceil(initial_ms * multiplier**n)) for n in range(attempts - 1))


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to log. Splits on the last '@' rather than parsing,
    so a password with an unescaped '/' or '@' is masked too, IPv6 hosts keep their brackets, and
    a URL written without its scheme (``user:pass@host``) is masked as well."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def read_secret_file(path: Path | None, setting: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path}: {e.strerror}") from None


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The Settings a process started with ``env`` (``WARREN_*`` variables) would see, built here:
    the demo and the tests configure workers by environment and must agree with them."""
    fields = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    return load(Settings, _env_file=None, **{k: v for k, v in fields.items() if k in Settings.model_fields})


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings, or raise ConfigError with one readable line."""
    settings = load(Settings, **overrides)
    settings.resolved_broker_url()  # surfaces unreadable credential files at start-up
    return settings


def load(model: type[_S], **overrides: object) -> _S:
    """Read and validate any of the settings models, or raise ConfigError with one readable line."""
    try:
        return model(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ConfigError(_describe(e, str(model.model_config.get("env_prefix", ENV_PREFIX)))) from None


def _describe(error: ValidationError, prefix: str) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        name = f"{prefix}{field.upper()}" if field else "settings"
        message = item["msg"].removeprefix("Value error, ")
        if field and field not in _SECRET_FIELDS and "input" in item:
            message += f" (got {item['input']!r})"
        lines.append(f"invalid setting {name}: {message}")
    return "; ".join(lines)
