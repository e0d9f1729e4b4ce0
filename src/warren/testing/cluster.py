"""A RabbitMQ cluster of Docker containers, for tests and benchmarks that need several nodes.

Three (or any number of) containers of a RabbitMQ image on a Docker network of their own, each
with its own hostname (``r1``, ``r2``, ...), clustered through classic peer discovery with one
Erlang cookie, with the cluster settings the Helm chart uses: ``pause_minority`` partition handling
and quorum queues replicated on every node. Each node's AMQP and management ports are published
on 127.0.0.1 only, so all traffic from this machine stays on loopback.

Node operations for chaos scenarios: ``kill`` (SIGKILL), ``stop`` (graceful), ``start``, ``freeze``
and ``thaw`` (``docker pause``), ``cut_off`` and ``reconnect`` (leave and rejoin the network), and
``leader_of`` a quorum queue. The image must run ``rabbitmq-server`` with the management plugin and
let ``guest`` log in remotely (``images/rabbitmq`` builds such an image: tests only).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warren.testing.broker import free_ports, rabbit_advanced_config

# Debian's client if present: its BuildKit needs no buildx plugin (scripts/docker.sh does the same).
DOCKER = os.environ.get("DOCKER") or shutil.which("docker", path="/usr/bin") or "docker"


@dataclass
class Node:
    name: str  # the Erlang node, rabbit@rN
    hostname: str  # rN
    container: str
    amqp_port: int  # on 127.0.0.1
    management_port: int  # on 127.0.0.1

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the docker client; RuntimeError with its stderr on failure if ``check``."""
    done = subprocess.run([DOCKER, *args], check=False, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _poll(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.25)


class DockerCluster:
    """``size`` RabbitMQ nodes clustered on a private Docker network (see the module docstring)."""

    def __init__(self, *, image: str, size: int = 3, prefix: str | None = None, net_ticktime: int = 10) -> None:
        self.image = image
        self.size = size
        self.credentials = "guest:guest"  # the test image lets guest in from anywhere
        self.prefix = prefix or f"warren-cluster-{secrets.token_hex(3)}"
        self.network = self.prefix
        self._dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self._dir.chmod(0o755)  # the image's rabbitmq user reads the mounted configuration
        ports = iter(free_ports(2 * size))
        self.nodes = [
            Node(name=f"rabbit@r{n}", hostname=f"r{n}", container=f"{self.prefix}-r{n}",
                 amqp_port=next(ports), management_port=next(ports))
            for n in range(1, size + 1)
        ]
        peers = "".join(f"cluster_formation.classic_config.nodes.{n} = {node.name}\n"
                        for n, node in enumerate(self.nodes, start=1))
        # What the chart sets (charts/warren/templates/rabbitmq-configmap.yaml): partition
        # handling and quorum queues on every node. net_ticktime is shorter than the default
        # 60 s so that a node cut off for 30 s is noticed within the test.
        (self._dir / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            "collect_statistics_interval = 1000\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}"
            "cluster_partition_handling = pause_minority\n"
            f"net_ticktime = {net_ticktime}\n"
        )
        (self._dir / "advanced.config").write_text(rabbit_advanced_config(quorum_cluster_size=size))
        self._cookie = secrets.token_hex(16).upper()
        for path in (self._dir / "rabbitmq.conf", self._dir / "advanced.config"):
            path.chmod(0o644)

    @property
    def amqp_urls(self) -> list[str]:
        return [f"amqp://{self.credentials}@127.0.0.1:{node.amqp_port}/%2F" for node in self.nodes]

    @property
    def broker_url(self) -> str:
        """Every node, as ``WARREN_BROKER_URL`` takes them."""
        return ",".join(self.amqp_urls)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> DockerCluster:
        docker("network", "create", self.network)
        for node in self.nodes:
            self._run(node)
        self.wait_formed(timeout=timeout)
        return self

    def _run(self, node: Node) -> None:
        docker(
            "run", "--detach", "--name", node.container, "--hostname", node.hostname, "--network", self.network,
            "--env", f"RABBITMQ_NODENAME={node.name}", "--env", f"RABBITMQ_ERLANG_COOKIE={self._cookie}",
            "--env", "RABBITMQ_CONFIG_FILE=/etc/warren-cluster/rabbitmq",
            "--env", "RABBITMQ_ADVANCED_CONFIG_FILE=/etc/warren-cluster/advanced.config",
            "--volume", f"{self._dir}:/etc/warren-cluster:ro",
            "--publish", f"127.0.0.1:{node.amqp_port}:5672",
            "--publish", f"127.0.0.1:{node.management_port}:15672",
            self.image,
        )

    def wait_formed(self, *, timeout: float = 120) -> None:
        """Until every node runs, in one cluster, with its AMQP port answering."""
        _poll(lambda: self.running_nodes() == {n.name for n in self.nodes} and all(map(self._amqp_answers, self.nodes)),
              timeout=timeout, what=f"a cluster of {self.size} running nodes")

    def running_nodes(self, via: Node | None = None) -> set[str]:
        """The nodes ``via`` (default: any node that answers) sees running."""
        for node in [via] if via else self.nodes:
            try:
                nodes = self.management(node, "/api/nodes")
            except (OSError, ValueError):
                continue
            return {n["name"] for n in nodes if n.get("running")}
        return set()

    def partitioned(self) -> bool:
        """True while any node that answers reports a network partition or misses a peer."""
        for node in self.nodes:
            try:
                nodes = self.management(node, "/api/nodes")
            except (OSError, ValueError):
                return True
            if any(n.get("partitions") or not n.get("running") for n in nodes):
                return True
        return False

    def heal(self, node: Node, *, timeout: float = 30) -> bool:
        """After a freeze or a cut, wait for the cluster to heal by itself; if it has not within
        ``timeout`` s, restart ``node`` (the remedy RabbitMQ documents for a partition that
        ``pause_minority`` did not resolve). Returns whether the restart was needed."""
        try:
            _poll(lambda: not self.partitioned(), timeout=timeout, what="the cluster healing by itself")
            return False
        except TimeoutError:
            self.restart(node)
            self.wait_formed(timeout=180)
            _poll(lambda: not self.partitioned(), timeout=60, what=f"the cluster healed after restarting {node.name}")
            return True

    def close(self) -> None:
        for node in self.nodes:
            docker("rm", "--force", "--volumes", node.container, check=False)
        docker("network", "rm", self.network, check=False)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DockerCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- node operations ------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if name in (n.name, n.hostname, n.container))

    def kill(self, node: Node) -> None:
        """SIGKILL the node's RabbitMQ (the container stops; ``start`` brings it back with its data)."""
        docker("kill", "--signal", "KILL", node.container)
        docker("wait", node.container, check=False, timeout=60)

    def stop(self, node: Node, timeout: int = 60) -> None:
        """Stop the node gracefully (SIGTERM: RabbitMQ shuts down cleanly)."""
        docker("stop", "--time", str(timeout), node.container, timeout=timeout + 30)

    def start_node(self, node: Node) -> None:
        docker("start", node.container)

    def restart(self, node: Node) -> None:
        docker("restart", "--time", "30", node.container, timeout=90)

    def freeze(self, node: Node) -> None:
        docker("pause", node.container)

    def thaw(self, node: Node) -> None:
        docker("unpause", node.container)

    def cut_off(self, node: Node) -> None:
        """Take the node off the cluster's network: neither its peers nor its clients reach it."""
        docker("network", "disconnect", self.network, node.container)

    def reconnect(self, node: Node) -> None:
        docker("network", "connect", self.network, node.container)

    def leader_of(self, queue: str, vhost: str = "/") -> Node:
        """The node leading quorum queue ``queue``, as a node that answers reports it."""
        path = f"/api/queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
        for node in self.nodes:
            try:
                info = self.management(node, path)
            except (OSError, ValueError):
                continue
            leader = info.get("leader") or info.get("node")
            if leader:
                return self.node(leader)
        raise RuntimeError(f"no node reports a leader for {queue}")

    def members_of(self, queue: str, vhost: str = "/") -> set[str]:
        path = f"/api/queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
        for node in self.nodes:
            try:
                return set(self.management(node, path).get("members") or ())
            except (OSError, ValueError):
                continue
        return set()

    def wait_for_quorum_plus_one(self, node: Node, *, timeout: float = 120) -> None:
        """As the chart's preStop: until stopping ``node`` leaves every quorum queue a majority."""
        def ready() -> bool:
            done = docker("exec", node.container, "rabbitmq-upgrade", "await_online_quorum_plus_one",
                          "-t", "5", check=False, timeout=30)
            return done.returncode == 0
        _poll(ready, timeout=timeout, what=f"quorum plus one without {node.name}")

    # -- management API ---------------------------------------------------------------------
    def management(self, node: Node, path: str, *, timeout: float = 5) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{node.management_port}{path}", headers={
            "Authorization": "Basic " + base64.b64encode(self.credentials.encode()).decode()})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    @staticmethod
    def _amqp_answers(node: Node) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", node.amqp_port), timeout=2) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return bool(sock.recv(8))
        except OSError:
            return False

    def logs(self, node: Node) -> str:
        done = docker("logs", "--tail", "200", node.container, check=False)
        return done.stdout + done.stderr
