"""Shared fixtures.

``broker`` is one private RabbitMQ node (``warren.testing.broker.LocalBroker``) for the whole
session, and ``postgres`` one private PostgreSQL cluster (tests/support/database.py). Both are
lazy: only a session that runs a test asking for one starts it, so unit tests stay fast. Tests
never share queues (each gets its own ``namespace``) nor databases.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from warren.testing.broker import LocalBroker, rabbitmq_installed

pytest_plugins = ["tests.support.fixtures", "tests.support.database"]


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[LocalBroker]:
    """A running RabbitMQ node, destroyed at the end unless WARREN_TEST_KEEP_BROKER is set."""
    if not rabbitmq_installed():
        # Never skip: a broker test that does not run proves nothing.
        pytest.fail("RabbitMQ (rabbitmq-server, rabbitmqctl) is not installed: run `make deps` "
                    "(scripts/install-deps.sh), then run the tests again.", pytrace=False)
    node = LocalBroker(name="warren-test")
    try:
        node.start()
    except BaseException:
        node.destroy()
        raise
    yield node
    if os.environ.get("WARREN_TEST_KEEP_BROKER"):
        request.config.stash[_KEPT_BROKER] = (
            f"node {node.node_name} still running at {node.amqp_url} (management "
            f"{node.management_url}, guest/guest); stop it with "
            f"`python -m warren.testing.broker stop --dir {node.base_dir}`")
    else:
        node.destroy()


_KEPT_BROKER = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if note := terminalreporter.config.stash.get(_KEPT_BROKER, None):
        terminalreporter.write_sep("-", "WARREN_TEST_KEEP_BROKER: RabbitMQ node kept")
        terminalreporter.write_line(note)


@pytest.fixture
def namespace() -> str:
    """A unique short prefix for this test's queues and exchanges, e.g. ``t1a2b3c4d``."""
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def broker_env(broker: LocalBroker, namespace: str) -> dict[str, str]:
    """Env vars pointing a worker subprocess at the test broker and this test's namespace."""
    return {"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": namespace}
