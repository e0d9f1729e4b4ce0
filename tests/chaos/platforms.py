"""Where the chaos scenarios run: the platform interface and its adapters.

A scenario starts workers, signals them, kills them and restarts the broker only through this
interface, so the same scenario proves the same thing for processes on this machine, Docker
containers, and (for users with a cluster) Kubernetes pods.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from tests.support.docker import HARDENED, docker, free_ports
from warren.testing.broker import LocalBroker
from warren.testing.processes import LocalWorker


class Worker(Protocol):
    name: str

    @property
    def ident(self) -> str:
        """How the worker names itself in completion events (``host:pid``)."""

    def wait_ready(self, timeout: float = 30.0) -> Worker: ...
    def signal(self, signum: int) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float) -> int: ...
    def alive(self) -> bool: ...
    def restarts(self) -> int: ...
    def log(self) -> str: ...
    def stop(self) -> None: ...


def wait_for_log(worker: Worker, text: str, *, timeout: float = 30.0, count: int = 1) -> None:
    """Poll the worker's log until ``text`` appears (``count`` times)."""
    deadline = time.monotonic() + timeout
    while worker.log().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{worker.name}: no {text!r} within {timeout}s:\n{worker.log()[-3000:]}")
        time.sleep(0.05)


class Platform(Protocol):
    name: str
    broker_url: str

    def start_worker(
        self, env: Mapping[str, str], *, name: str, pool: str = "selftest", restart: bool = False
    ) -> Worker:
        """A worker of ``pool``; with ``restart`` the platform restarts it whenever it dies, as
        Kubernetes restarts a pod's container."""

    def stop_broker(self) -> None: ...
    def start_broker(self) -> None: ...


# -- processes on this machine ------------------------------------------------------------------
class ProcessWorker:
    """A LocalWorker, optionally supervised: respawned whenever it exits on its own."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, *, name: str, pool: str, restart: bool) -> None:
        self.name = name
        self._spawn = lambda n: LocalWorker(dict(env), log_dir, pool=pool, name=f"{name}-{n}")
        self._generation = itertools.count()
        self.current = self._spawn(next(self._generation))
        self._restarts = 0
        self._stopping = threading.Event()
        if restart:
            threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.05):
            if not self.current.alive():
                self._restarts += 1
                self.current = self._spawn(next(self._generation))

    @property
    def ident(self) -> str:
        return f"{socket.gethostname()}:{self.current.proc.pid}"

    def wait_ready(self, timeout: float = 30.0) -> ProcessWorker:
        self.current.wait_ready(timeout)
        return self

    def signal(self, signum: int) -> None:
        self.current.signal(signum)

    def kill(self) -> None:
        self.current.kill()

    def wait(self, timeout: float) -> int:
        return self.current.wait(timeout)

    def alive(self) -> bool:
        return self.current.alive()

    def restarts(self) -> int:
        return self._restarts

    def log(self) -> str:
        return self.current.log()

    def stop(self) -> None:
        self._stopping.set()
        self.current.stop()


class ProcessPlatform:
    name = "processes"

    def __init__(self, broker: LocalBroker, log_dir: Path) -> None:
        self.broker = broker
        self.broker_url = broker.amqp_url
        self.log_dir = log_dir
        self._ids = itertools.count(1)

    def start_worker(
        self, env: Mapping[str, str], *, name: str, pool: str = "selftest", restart: bool = False
    ) -> ProcessWorker:
        return ProcessWorker(env, self.log_dir, name=f"{name}-{next(self._ids)}", pool=pool, restart=restart)

    def stop_broker(self) -> None:
        self.broker.stop()

    def start_broker(self) -> None:
        self.broker.start()


# -- Docker containers ----------------------------------------------------------------------------
class Container:
    """A worker container: hardened as the chart runs it (read-only root, no capabilities)."""

    def __init__(self, image: str, env: Mapping[str, str], *, name: str, pool: str, restart: bool) -> None:
        self.name = name
        args = ["run", "--detach", "--name", name, "--network", "host",
                "--env", f"WARREN_WORKER_NAME={name}", *HARDENED]
        if restart:
            args += ["--restart", "on-failure"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        docker(*args, image, pool)

    @property
    def ident(self) -> str:
        return self.name  # WARREN_WORKER_NAME: on the host network every container has the host's name

    def _state(self, field: str) -> str:
        return docker("inspect", "--format", f"{{{{.{field}}}}}", self.name).stdout.strip()

    def wait_ready(self, timeout: float = 30.0) -> Container:
        wait_for_log(self, " consuming ", timeout=timeout)
        return self

    def signal(self, signum: int) -> None:
        docker("kill", "--signal", str(signum), self.name, check=False)

    def kill(self) -> None:
        docker("kill", self.name, check=False)
        docker("wait", self.name, check=False)

    def wait(self, timeout: float) -> int:
        return int(docker("wait", self.name, timeout=timeout).stdout.strip())

    def alive(self) -> bool:
        return self._state("State.Running") == "true"

    def restarts(self) -> int:
        return int(self._state("RestartCount"))

    def log(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def stop(self) -> None:
        docker("rm", "--force", self.name, check=False)


class DockerPlatform:
    """Workers and the broker as containers on the host network (all traffic stays on loopback)."""

    name = "docker"

    def __init__(self, *, worker_image: str, rabbitmq_image: str, prefix: str) -> None:
        self.worker_image = worker_image
        self.prefix = prefix
        self.broker_name = f"{prefix}-rabbitmq"
        amqp, dist, epmd, management = free_ports(4)
        self.broker_url = f"amqp://guest:guest@127.0.0.1:{amqp}/%2F"
        self._names = itertools.count(1)
        # Host networking keeps all traffic on loopback; the node gets its own ports and its own
        # epmd so it never meets another node on this machine (images/rabbitmq/Dockerfile).
        docker("run", "--detach", "--name", self.broker_name, "--network", "host",
               "--env", f"RABBITMQ_NODE_PORT={amqp}", "--env", f"RABBITMQ_DIST_PORT={dist}",
               "--env", f"ERL_EPMD_PORT={epmd}",
               "--env", f"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-rabbitmq_management tcp_config [{{port,{management}}}]",
               rabbitmq_image)
        self._wait_broker()

    def _wait_broker(self, timeout: float = 90.0) -> None:
        from warren.broker import Session
        from warren.config import Settings
        from warren.errors import BrokerUnavailable

        deadline = time.monotonic() + timeout
        while True:
            try:
                Session.open(Settings(_env_file=None, broker_url=self.broker_url), name="chaos-probe").close()
                return
            except BrokerUnavailable as e:
                if time.monotonic() > deadline:
                    logs = docker("logs", self.broker_name, check=False)
                    raise RuntimeError(
                        f"broker container not ready in {timeout}s:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}"
                    ) from e
                time.sleep(0.2)

    def start_worker(
        self, env: Mapping[str, str], *, name: str, pool: str = "selftest", restart: bool = False
    ) -> Container:
        return Container(self.worker_image, env, name=f"{self.prefix}-{name}-{next(self._names)}", pool=pool,
                         restart=restart)

    def stop_broker(self) -> None:
        docker("stop", "--time", "60", self.broker_name, timeout=90)

    def start_broker(self) -> None:
        docker("start", self.broker_name)
        self._wait_broker()

    def close(self) -> None:
        names = docker("ps", "--all", "--quiet", "--filter", f"name={self.prefix}-", check=False).stdout.split()
        if names:
            docker("rm", "--force", *names, check=False)
