"""`warren topology apply --wait`: the workers' topology step waits for the broker, and for every
node of the cluster, within a deadline, instead of failing at once into the kubelet's crash-loop
back-off (the chart's init containers run it before RabbitMQ may be up)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.docker import eventually, free_ports
from warren import readiness
from warren.config import settings_from_env
from warren.errors import BrokerUnavailable
from warren.testing.broker import LocalBroker

pytestmark = pytest.mark.broker
SRC = Path(__file__).resolve().parents[2] / "src"


def topology_apply(env: dict[str, str], *args: str, stderr: Path) -> subprocess.Popen[str]:
    with stderr.open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "warren", "topology", "apply", "selftest", *args],
                                env={**os.environ, **env, "WARREN_LOG_LEVEL": "INFO",
                                     "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])},
                                stdout=subprocess.PIPE, stderr=err, text=True)


@contextlib.contextmanager
def forwarding(port: int, to: tuple[str, int]) -> Iterator[None]:
    """Accept on 127.0.0.1:``port`` and relay each connection to ``to``: the broker appearing late."""
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(to)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_it_waits_for_a_broker_that_starts_late(broker: LocalBroker, namespace: str, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    amqp = urlsplit(broker.amqp_url)
    late_url = broker.amqp_url.replace(f"{amqp.hostname}:{amqp.port}", f"127.0.0.1:{port}")
    stderr = tmp_path / "stderr"
    process = topology_apply({"WARREN_BROKER_URL": late_url, "WARREN_NAMESPACE": namespace,
                              "WARREN_RECONNECT_MAX_DELAY": "1"}, "--wait", "60", stderr=stderr)
    try:
        eventually(lambda: stderr.read_text().count("broker not ready") >= 2, timeout=30,
                   what="two attempts while nothing listens", logs=stderr.read_text)
        assert process.poll() is None, "still waiting, not crashed"
        with forwarding(port, (amqp.hostname or "127.0.0.1", amqp.port or 5672)):
            out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.read_text()
    assert out.startswith("applied ")


def test_it_gives_up_at_the_deadline_saying_why(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    stderr = tmp_path / "stderr"
    started = time.monotonic()
    process = topology_apply({"WARREN_BROKER_URL": f"amqp://127.0.0.1:{port}/"}, "--wait", "2", stderr=stderr)
    assert process.wait(timeout=30) == 1
    assert 2 - 1 <= time.monotonic() - started < 15
    assert f"connecting to 127.0.0.1:{port}" in stderr.read_text().splitlines()[-1]


def test_it_waits_for_the_clusters_nodes(broker: LocalBroker, tmp_path: Path) -> None:
    management_port = str(urlsplit(broker.management_url).port)
    settings = settings_from_env({"WARREN_BROKER_URL": broker.amqp_url})
    deadline = time.monotonic() + 10
    assert readiness.wait_for_nodes(settings, nodes=1, management_port=int(management_port), deadline=deadline) == 1
    stderr = tmp_path / "stderr"
    process = topology_apply({"WARREN_BROKER_URL": broker.amqp_url}, "--wait", "2", "--wait-for-nodes", "3",
                             "--management-port", management_port, stderr=stderr)
    assert process.wait(timeout=30) == 1
    assert "did not reach 3 running nodes in time (1 of 3 nodes running)" in stderr.read_text()
    with pytest.raises(BrokerUnavailable, match="did not reach 2 running nodes"):
        readiness.wait_for_nodes(settings, nodes=2, management_port=free_ports(1)[0], deadline=time.monotonic())
