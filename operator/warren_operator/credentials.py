"""Where a WorkerAutoscaler's management API is and how to log in: its Secret, read and combined
with ``spec.managementUrl`` into a ``management.ManagementConfig``.

Apart from ``handlers`` because it is where the operator holds a password it was given: it reads
the Secret (the operator's only ``secrets get``), decodes it, and says what is wrong with it
naming the Secret and its keys, never the password. ``management_config_from`` is the pure part,
tested with the three shapes of Secret the chart relies on.

The URL is the Secret's ``urlKey`` (default ``url``), else ``spec.managementUrl``: an ``http(s)://``
management URL, or an ``amqp(s)://`` broker URL (management on 15672 or 15671 of its host), with
or without credentials. The Secret's ``usernameKey`` and ``passwordKey`` (default ``username``,
``password``), where present, win over the URL's. So one Secret serves in three shapes: the roles'
own broker URL; url, username and password; or only a password (``passwordKey:
rabbitmq-password``) with a ``managementUrl`` such as ``http://warren@host:15672``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import urlsplit

import kubernetes
from pydantic import SecretStr, ValidationError

from warren_operator.management import ManagementConfig, parse_broker_url
from warren_operator.spec import WorkerAutoscalerSpec, parse_spec


class CredentialsError(Exception):
    """The management Secret is missing or does not hold a usable url, username and password."""


def management_config(namespace: str, spec: WorkerAutoscalerSpec) -> ManagementConfig:
    """The management API of ``spec``, from its Secret in ``namespace`` (secrets: get)."""
    name = spec.management_secret_ref.name
    try:
        secret = kubernetes.client.CoreV1Api().read_namespaced_secret(name, namespace)
    except kubernetes.client.ApiException as e:
        raise CredentialsError(f"Secret {name!r}: {e.status} {e.reason}") from None
    try:
        data = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(f"Secret {name!r}: a value is not base64-encoded UTF-8") from None
    return management_config_from(spec, data)


def management_config_from(spec: WorkerAutoscalerSpec | Mapping[str, object],
                           data: Mapping[str, str]) -> ManagementConfig:
    """``management_config`` once the Secret is read: its decoded ``data``. ``spec`` parsed, or as
    Kubernetes stores it (then ``spec.SpecError`` if it is not a valid spec). CredentialsError if
    they give no usable URL and password; the message never holds the password."""
    if not isinstance(spec, WorkerAutoscalerSpec):
        spec = parse_spec(spec)
    ref = spec.management_secret_ref
    url = (data.get(ref.url_key) or spec.management_url or "").strip()
    if not url:
        raise CredentialsError(f"Secret {ref.name!r} has no {ref.url_key!r} key and spec.managementUrl is not set")
    try:
        parsed = parse_broker_url(url)
    except ValueError as e:  # its message names the URL with the password masked
        raise CredentialsError(f"Secret {ref.name!r}: {e}") from None
    username = data.get(ref.username_key) or parsed.config.username
    password = data.get(ref.password_key)
    if password is None:
        if urlsplit(url).password is None:
            raise CredentialsError(f"Secret {ref.name!r} has no {ref.password_key!r} key "
                                   f"and the URL {parsed.display} has no password")
        password = parsed.config.password.get_secret_value()
    try:
        return ManagementConfig(base_url=parsed.config.base_url, username=username.strip(),
                                password=SecretStr(password.strip()))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise CredentialsError(f"Secret {ref.name!r}: {problems}") from None
