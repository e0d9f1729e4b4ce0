"""How a WorkerAutoscaler finds the management API and its credentials: the Secret's three shapes.

The chart relies on the first two: the roles' own broker URL Secret (generated credentials, or an
external broker), and the RabbitMQ Secret, which holds only a password, with ``managementUrl``.
"""

from __future__ import annotations

from typing import Any

import pytest

from warren_operator.credentials import CredentialsError, management_config_from
from warren_operator.spec import parse_spec


def _spec(**ref: str) -> dict[str, Any]:
    return {"targetRef": {"name": "payments"}, "queue": "warren.payments", "maxReplicas": 5,
            "target": {"messagesPerReplica": 10}, "managementSecretRef": {"name": "credentials", **ref}}


@pytest.mark.parametrize(("spec", "data", "url", "username", "password"), [
    # The roles' broker URL: management on 15672 of the AMQP host.
    (_spec(), {"url": "amqp://warren:s3cr%2Ft@warren-rabbitmq.shop.svc:5672/%2F"},
     "http://warren-rabbitmq.shop.svc:15672", "warren", "s3cr/t"),
    (_spec(urlKey="amqp-url"), {"amqp-url": "amqps://app:pw@broker.example.com/prod"},
     "https://broker.example.com:15671", "app", "pw"),
    # url, username and password keys.
    (_spec(), {"url": "http://127.0.0.1:15672", "username": "guest", "password": "guest"},
     "http://127.0.0.1:15672", "guest", "guest"),
    # Only a password, the URL (with the user) in the spec.
    ({**_spec(passwordKey="rabbitmq-password"), "managementUrl": "http://warren@warren-rabbitmq:15672"},
     {"rabbitmq-password": "abc\n", "rabbitmq-erlang-cookie": "x"}, "http://warren-rabbitmq:15672", "warren", "abc"),
    # The Secret's keys win over the URL's credentials.
    (_spec(), {"url": "amqp://old:old@h/", "username": "new", "password": "new"}, "http://h:15672", "new", "new"),
])
def test_the_secret_gives_the_management_url_and_credentials(
        spec: dict[str, Any], data: dict[str, str], url: str, username: str, password: str) -> None:
    config = management_config_from(spec, data)
    assert (config.base_url, config.username, config.password.get_secret_value()) == (url, username, password)
    assert management_config_from(parse_spec(spec), data) == config  # parsed, or as Kubernetes stores it


@pytest.mark.parametrize(("spec", "data", "message"), [
    (_spec(), {"password": "hunter2"}, "has no 'url' key and spec.managementUrl is not set"),
    (_spec(), {"url": "http://warren-rabbitmq:15672"}, "has no 'password' key"),
    (_spec(), {"url": "ftp://u:hunter2@host/"}, "needs amqp, amqps, http or https"),
    (_spec(), {"url": "u:hunter2@host"}, "needs scheme://host"),  # no scheme: nothing to tell the password by
    (_spec(), {"url": "http://host:15672", "username": "a:b", "password": "hunter2"}, "username"),
])
def test_unusable_secrets_say_why_without_the_password(
        spec: dict[str, Any], data: dict[str, str], message: str) -> None:
    with pytest.raises(CredentialsError) as failure:
        management_config_from(spec, data)
    assert message in str(failure.value)
    assert "hunter2" not in str(failure.value)
