"""The private RabbitMQ node every broker test relies on really works: AMQP, quorum
queues, durability across restart and crash, stop, and the CLI used by `make demo`."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from warren.testing.broker import LocalBroker

pytestmark = pytest.mark.broker


def _publish_durable(url: str, queue: str, body: bytes) -> None:
    """Declare a durable quorum queue and publish a persistent message, waiting for the confirm."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        # With confirms on, a nack or an unroutable mandatory message raises here.
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
        assert ch.queue_declare(queue, passive=True).method.message_count == 1
    finally:
        conn.close()


def _get_one(url: str, queue: str) -> bytes | None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        assert props.delivery_mode == 2
        ch.basic_ack(method.delivery_tag)
        ch.queue_delete(queue)
        return body
    finally:
        conn.close()


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _cli(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "warren.testing.broker", *args],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_node_is_up_with_management_api(broker: LocalBroker) -> None:
    assert broker.is_running()
    overview = broker.management_get("/api/overview")
    assert overview["node"] == broker.node_name
    assert broker.management_get("overview")["node"] == broker.node_name  # "/api" is optional
    assert broker.ctl("status").returncode == 0


def test_quorum_queue_message_survives_restart(broker: LocalBroker, namespace: str) -> None:
    queue = f"{namespace}.durable"
    _publish_durable(broker.amqp_url, queue, b"keep me")
    assert broker.management_get(f"/api/queues/%2F/{queue}")["type"] == "quorum"
    url, node = broker.amqp_url, broker.node_name

    broker.restart()  # the session broker stays running afterwards

    assert (broker.amqp_url, broker.node_name) == (url, node)
    assert broker.is_running()
    assert _get_one(broker.amqp_url, queue) == b"keep me"


def test_cli_node_coexists_survives_kill_and_stop_closes_port(
    broker: LocalBroker, namespace: str, tmp_path: Path
) -> None:
    url = _cli("start", "--dir", str(tmp_path))
    other = LocalBroker.from_dir(tmp_path)
    try:
        assert url == other.amqp_url != broker.amqp_url
        assert other.node_name != broker.node_name  # both share epmd: distinct names coexist
        queue = f"{namespace}.crash"
        _publish_durable(other.amqp_url, queue, b"survive a crash")

        other.kill()
        assert not other.is_running()
        assert _refuses(other.amqp_port)

        assert _cli("start", "--dir", str(tmp_path)) == url  # same ports and data
        assert _get_one(other.amqp_url, queue) == b"survive a crash"

        _cli("stop", "--dir", str(tmp_path))
        assert not other.is_running()
        assert _refuses(other.amqp_port)
        assert _refuses(other.management_port)
        assert broker.management_get("/api/overview")["node"] == broker.node_name
    finally:
        other.destroy()
    assert tmp_path.exists()  # destroy() only deletes directories it created
