"""The management API client (``warren_operator.management``): ``fetch_queue_stats`` and
``fetch_consumers`` against a real RabbitMQ node: counts, rates, who holds the unacked messages,
and errors that say whether to retry and never show the password. URL parsing as tables; statuses
RabbitMQ cannot be made to answer (5xx, redirects) and TLS from a stub server. (Reading the replies
into values: test_stats.)

A quorum queue's counts refresh on its leader's 5 s tick on 3.10: tests poll with a deadline.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import socket
import ssl
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pika
import pytest
from pydantic import SecretStr, ValidationError

from warren.config import redact_url
from warren.testing.broker import LocalBroker
from warren_operator.management import (
    BrokerUnreachable,
    ManagementConfig,
    MetricsError,
    QueueNotFound,
    StatsNotReady,
    Unauthorized,
    UnexpectedResponse,
    fetch_consumers,
    fetch_queue_stats,
    parse_broker_url,
)
from warren_operator.stats import Consumer, QueueStats

COUNTS_APPEAR_WITHIN = 30.0  # s: a new quorum queue's first report takes 5-10 s, each change up to 5 s


@pytest.fixture
def management(broker: LocalBroker) -> ManagementConfig:
    return parse_broker_url(broker.amqp_url, management_port=broker.management_port).config


@pytest.fixture
def connection(broker: LocalBroker) -> Iterator[pika.BlockingConnection]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    yield conn
    if conn.is_open:
        conn.close()


@pytest.fixture
def queue(connection: pika.BlockingConnection, namespace: str) -> Iterator[str]:
    """A durable quorum queue of this test's own, deleted afterwards."""
    name = f"{namespace}.work"
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    yield name
    if connection.is_open:
        connection.channel().queue_delete(name)


def _publish(connection: pika.BlockingConnection, queue: str, count: int) -> None:
    channel = connection.channel()
    channel.confirm_delivery()
    for n in range(count):  # with confirms, a nacked or unroutable publish raises here
        channel.basic_publish("", queue, f"m{n}".encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)


def _poll(config: ManagementConfig, queue: str, until: Callable[[QueueStats], bool], *,
          current_replicas: int = 0, timeout: float = COUNTS_APPEAR_WITHIN) -> QueueStats:
    """The first stats for which ``until`` holds; a failure showing the last ones seen otherwise."""
    deadline = time.monotonic() + timeout
    seen: QueueStats | MetricsError | None = None
    while time.monotonic() < deadline:
        try:
            seen = fetch_queue_stats(config, "/", queue, current_replicas=current_replicas, timeout=5)
        except StatsNotReady as e:  # a new queue: its leader has not ticked yet
            seen = e
        else:
            if until(seen):
                return seen
        time.sleep(0.2)
    pytest.fail(f"stats of {queue} never matched within {timeout:g} s; last seen: {seen!r}")


def _text_of(error: BaseException) -> str:
    """What a log could show of ``error``: message, repr and those of every chained exception."""
    parts = []
    chained: BaseException | None = error
    while chained is not None:
        parts += [str(chained), repr(chained)]
        chained = chained.__cause__ or chained.__context__
    return "\n".join(parts)


def _library_locals(error: BaseException) -> str:
    """Every local variable of every frame the error passed through below the test's own frame,
    as a traceback printed with locals (Sentry, rich) would show them."""
    assert error.__traceback__ is not None
    frames = traceback.walk_tb(error.__traceback__.tb_next)
    return "".join(traceback.StackSummary.extract(frames, capture_locals=True).format())


# --- against the broker ---------------------------------------------------------------------


@pytest.mark.broker
def test_stats_count_ready_unacked_and_consumers(
    management: ManagementConfig, connection: pika.BlockingConnection, queue: str,
) -> None:
    published, gotten, prefetch = 10, 3, 2
    _publish(connection, queue, published)
    getter = connection.channel()  # stays open: its messages stay unacked
    for _ in range(gotten):
        method, _props, _body = getter.basic_get(queue, auto_ack=False)
        assert method is not None
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=prefetch)
    consumer.basic_consume(queue, lambda *_: None)  # never acks: ``prefetch`` more unacked

    # 3.10's quorum queues count every unacked basic.get as a consumer, besides the real one.
    expected = (published - gotten - prefetch, gotten + prefetch, 1 + gotten)
    stats = _poll(management, queue, lambda s: (s.ready, s.unacked, s.consumers) == expected, current_replicas=7)

    assert stats.current_replicas == 7


@pytest.mark.broker
@pytest.mark.parametrize("vhost", ["/", "no-such-vhost"], ids=["missing queue", "missing vhost"])
def test_a_missing_queue_is_queue_not_found_naming_it(
    management: ManagementConfig, namespace: str, vhost: str,
) -> None:
    missing = f"{namespace}.never-declared"

    with pytest.raises(QueueNotFound) as caught:
        fetch_queue_stats(management, vhost, missing, current_replicas=1, timeout=5)

    assert missing in str(caught.value)
    assert (caught.value.queue, caught.value.vhost, caught.value.status) == (missing, vhost, 404)
    assert not caught.value.temporary


@pytest.mark.broker
def test_a_wrong_password_is_unauthorized_and_shown_nowhere(broker: LocalBroker, queue: str) -> None:
    password = f"wrong-{secrets.token_hex(8)}"
    config = parse_broker_url(f"http://guest:{password}@127.0.0.1:{broker.management_port}").config

    with pytest.raises(Unauthorized) as caught:
        fetch_queue_stats(config, "/", queue, current_replicas=1, timeout=5)

    text = _text_of(caught.value) + _library_locals(caught.value)
    assert "fetch_queue_stats" in text  # the frames were looked at
    assert password not in text
    assert base64.b64encode(f"guest:{password}".encode()).decode() not in text  # nor the Authorization header
    assert "guest:***@127.0.0.1" in str(caught.value)
    assert "Login failed" in str(caught.value)
    assert (caught.value.status, caught.value.temporary) == (401, False)


@pytest.mark.broker
def test_a_user_without_the_management_tag_is_unauthorized_saying_so(
    broker: LocalBroker, namespace: str, queue: str,
) -> None:
    user, password = f"{namespace}-plain", secrets.token_hex(8)
    broker.ctl("add_user", user, password)
    try:
        config = ManagementConfig(base_url=broker.management_url, username=user, password=SecretStr(password))
        with pytest.raises(Unauthorized, match="Not management user") as caught:
            fetch_queue_stats(config, "/", queue, current_replicas=1, timeout=5)
    finally:
        broker.ctl("delete_user", user)
    assert password not in _text_of(caught.value)


@pytest.mark.broker
def test_consumers_are_told_by_their_connection_name_with_the_unacked_messages_they_hold(
    broker: LocalBroker, management: ManagementConfig, connection: pika.BlockingConnection, queue: str,
) -> None:
    _publish(connection, queue, 10)
    with ExitStack() as connections:
        for name, prefetch in (("payments-7d9f-a", 3), ("payments-7d9f-b:4242", 2), (None, 1)):
            parameters = pika.URLParameters(broker.amqp_url)
            if name is not None:
                parameters.client_properties = {"connection_name": name}
            conn = connections.enter_context(pika.BlockingConnection(parameters))
            conn.channel()  # a channel that consumes nothing is no consumer
            channel = conn.channel()
            channel.basic_qos(prefetch_count=prefetch)
            channel.basic_consume(queue, lambda *_: None)  # never acks
        expected = {Consumer("payments-7d9f-a", "127.0.0.1", 3), Consumer("payments-7d9f-b:4242", "127.0.0.1", 2),
                    Consumer(None, "127.0.0.1", 1)}

        deadline, seen = time.monotonic() + COUNTS_APPEAR_WITHIN, set()
        while seen != expected:  # channel stats reach the management database every 5 s
            assert time.monotonic() < deadline, f"consumers never matched; last seen: {seen}"
            time.sleep(0.2)
            seen = set(fetch_consumers(management, "/", queue, timeout=5))


@pytest.mark.broker
def test_a_wrong_password_reading_consumers_is_unauthorized_and_shown_nowhere(broker: LocalBroker, queue: str) -> None:
    password = f"wrong-{secrets.token_hex(8)}"
    config = parse_broker_url(f"amqp://guest:{password}@127.0.0.1", management_port=broker.management_port).config

    with pytest.raises(Unauthorized) as caught:
        fetch_consumers(config, "/", queue, timeout=5)

    assert password not in _text_of(caught.value) + _library_locals(caught.value)
    assert "guest:***@127.0.0.1" in str(caught.value)


@pytest.mark.broker
def test_ack_and_publish_rates_become_positive_and_stay_so_under_steady_traffic(
    management: ManagementConfig, connection: pika.BlockingConnection, queue: str,
) -> None:
    idle = _poll(management, queue, lambda s: True)
    assert (idle.ready, idle.unacked, idle.publish_rate, idle.ack_rate) == (0, 0, None, None)  # never saw traffic

    channel = connection.channel()
    channel.confirm_delivery()
    started = next_reading = time.monotonic()
    first_positive: float | None = None
    readings: list[QueueStats] = []
    # The first rate needs a full 5 s sample; then 6 s of readings cross at least one sample
    # boundary, where the API's default (unranged) rate would read 0.0 most of the time.
    while first_positive is None or time.monotonic() < first_positive + 6:
        channel.basic_publish("", queue, b"tick", pika.BasicProperties(delivery_mode=2), mandatory=True)
        method, _props, _body = channel.basic_get(queue, auto_ack=False)
        channel.basic_ack(method.delivery_tag)
        if time.monotonic() >= next_reading:
            next_reading += 0.5
            stats = fetch_queue_stats(management, "/", queue, current_replicas=1, timeout=5)
            if first_positive is None and (stats.ack_rate or 0) > 0:
                first_positive = time.monotonic()
            if first_positive is not None:
                readings.append(stats)
            assert first_positive is not None or next_reading - started < 20, f"no ack rate in 20 s: {stats!r}"
        time.sleep(0.05)  # about 20 messages a second

    assert all(r.ack_rate and r.publish_rate for r in readings), [(r.publish_rate, r.ack_rate) for r in readings]


# --- without the broker: nothing listening, a silent server ----------------------------------


def test_nothing_listening_is_broker_unreachable_at_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed
    config = ManagementConfig(base_url=f"http://127.0.0.1:{port}", username="guest", password=SecretStr("guest"))

    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="connection refused") as caught:
        fetch_queue_stats(config, "/", "q", current_replicas=1, timeout=5)

    assert time.monotonic() - started < 1
    assert caught.value.temporary


def test_a_server_that_never_answers_is_broker_unreachable_within_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads or answers
        port = silent.getsockname()[1]
        config = ManagementConfig(base_url=f"http://127.0.0.1:{port}", username="guest", password=SecretStr("guest"))

        started = time.monotonic()
        with pytest.raises(BrokerUnreachable, match=r"no answer within 0\.5 s"):
            fetch_queue_stats(config, "/", "q", current_replicas=1, timeout=0.5)

        assert time.monotonic() - started < 2


# --- statuses and TLS from a stub server ----------------------------------------------------


@contextmanager
def _stub(status: int, body: bytes = b"", *, location: str | None = None,
          tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[str]]]:
    """An HTTP(S) server on 127.0.0.1 answering every GET alike; yields its port and the
    Authorization headers it received."""
    authorizations: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorizations.append(self.headers.get("Authorization", ""))
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], authorizations
    finally:
        server.shutdown()
        server.server_close()


def _config(port: int, *, scheme: str = "http", ca_file: Path | None = None) -> ManagementConfig:
    return ManagementConfig(base_url=f"{scheme}://127.0.0.1:{port}", username="operator",
                            password=SecretStr("s3cret-pw"), ca_file=ca_file)


@pytest.mark.parametrize(("status", "body", "error", "temporary"), [
    # a node still booting, or a proxy in front of it with no node behind
    (503, b'{"error":"service_unavailable","reason":"booting"}', BrokerUnreachable, True),
    (502, b"<html>Bad Gateway</html>", BrokerUnreachable, True),
    # a proxy that forbids, as RabbitMQ itself answers 401 to everything
    (403, b"", Unauthorized, False),
    (400, b'{"error":"bad_request","reason":"Invalid range parameters"}', UnexpectedResponse, False),
    # a 200 that is not the management API: a login page, a health endpoint
    (200, b"<html>Sign in</html>", UnexpectedResponse, False),
    (200, b'["not", "a", "queue"]', UnexpectedResponse, False),
])
def test_statuses_map_to_errors_that_say_whether_to_retry(
    status: int, body: bytes, error: type[MetricsError], temporary: bool,
) -> None:
    with _stub(status, body) as (port, _), pytest.raises(error) as caught:
        fetch_queue_stats(_config(port), "/", "q", current_replicas=1, timeout=5)

    assert caught.value.temporary is temporary
    assert "operator:***@127.0.0.1" in str(caught.value)
    assert "Sign in" not in str(caught.value) and "Bad Gateway" not in str(caught.value)  # bodies never shown


def test_a_redirect_is_refused_and_never_gets_the_credentials() -> None:
    with _stub(200, b"{}") as (elsewhere, received_elsewhere), \
            _stub(302, location=f"http://127.0.0.1:{elsewhere}/api/queues/%2F/q") as (port, received), \
            pytest.raises(UnexpectedResponse, match="302"):
        fetch_queue_stats(_config(port), "/", "q", current_replicas=1, timeout=5)

    assert len(received) == 1 and received_elsewhere == []


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_https_trusts_the_ca_file_and_nothing_else(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    body = json.dumps({"messages_ready": 4, "messages_unacknowledged": 1, "consumers": 1}).encode()
    with _stub(200, body, tls=tls) as (port, _):
        trusted = fetch_queue_stats(_config(port, scheme="https", ca_file=cert), "/", "q",
                                    current_replicas=1, timeout=5)
        with pytest.raises(BrokerUnreachable, match="TLS certificate not trusted"):
            fetch_queue_stats(_config(port, scheme="https"), "/", "q", current_replicas=1, timeout=5)

    assert trusted == QueueStats(ready=4, unacked=1, consumers=1, current_replicas=1)


# --- pure: URLs and the configuration -------------------------------------------------------


@pytest.mark.parametrize(("url", "port", "base_url", "user", "vhost"), [
    ("amqp://guest:guest@127.0.0.1:5672/%2F", None, "http://127.0.0.1:15672", "guest", "/"),
    ("amqp://rabbit", None, "http://rabbit:15672", "guest", "/"),  # AMQP's defaults: guest, vhost /
    ("amqps://op:pw@rabbit:5671/shop", None, "https://rabbit:15671", "op", "shop"),
    ("amqp://op:pw@rabbit/shop", 8080, "http://rabbit:8080", "op", "shop"),  # management elsewhere
    ("amqp://op%40corp:p%3Aw@[::1]/a%2Fb", None, "http://[::1]:15672", "op@corp", "a/b"),  # escapes, IPv6
    ("https://op:pw@rabbit:8443/rabbitmq/", None, "https://rabbit:8443/rabbitmq", "op", None),  # path prefix
])
def test_parse_broker_url(url: str, port: int | None, base_url: str, user: str, vhost: str | None) -> None:
    parsed = parse_broker_url(url, management_port=port)

    assert (parsed.config.base_url, parsed.config.username, parsed.vhost) == (base_url, user, vhost)
    assert parsed.display == redact_url(url)


def test_parse_broker_url_reads_escaped_passwords() -> None:
    assert parse_broker_url("amqp://op:p%3Aw%40rd@rabbit").config.password.get_secret_value() == "p:w@rd"


@pytest.mark.parametrize("url", [
    "ftp://op:s3cret@rabbit/",  # not a broker URL
    "amqp://op:s3cret@/",  # no host
    "amqp://op:s3cret@rabbit:99999/",  # no such port
    "amqp://op:s3/cret@rabbit/",  # an unescaped / in the password
    "http://op:s3cret@rabbit:15672/?page=1",  # a query where only a path prefix belongs
    "amqp://op%3Ax:s3cret@rabbit/",  # a ':' in the user name: HTTP basic authentication cannot say it
])
def test_parse_broker_url_rejects_unusable_urls_without_showing_the_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_broker_url(url)

    assert "s3cret" not in _text_of(caught.value)
    assert "***" in str(caught.value)


def test_parse_broker_url_rejects_a_url_without_a_scheme_without_showing_it() -> None:
    with pytest.raises(ValueError, match="needs scheme://host") as caught:
        parse_broker_url("op:s3cret@rabbit")  # nothing tells the password from the host

    assert "s3cret" not in _text_of(caught.value)


def test_config_refuses_a_base_url_with_credentials_and_never_echoes_it() -> None:
    with pytest.raises(ValidationError) as caught:
        ManagementConfig(base_url="http://op:s3cret@rabbit:15672", username="op", password=SecretStr("x"))

    assert "s3cret" not in _text_of(caught.value)
    assert "parse_broker_url" in str(caught.value)


def test_config_repr_never_shows_the_password() -> None:
    config = ManagementConfig(base_url="http://rabbit:15672", username="op", password=SecretStr("s3cret"))

    assert "s3cret" not in repr(config) + str(config) + config.display_url
    assert config.display_url == "http://op:***@rabbit:15672"
