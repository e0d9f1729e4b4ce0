"""A private, throwaway RabbitMQ node for tests, benchmarks and ``make demo``.

Warren's guarantees (at-least-once delivery, dead-lettering, surviving broker restarts)
only mean something against a real broker, so the test suite, the benchmarks and the
demo all need a RabbitMQ node of their own: one that never touches a system broker, the
default ports, /var/lib/rabbitmq or another developer's node, and that a test can stop,
restart or SIGKILL on purpose.  ``LocalBroker`` runs such a node from the Debian
``rabbitmq-server`` package as the current user, with every file (config, data, logs,
pid file, Erlang cookie) inside one directory and every port picked free from the OS.

    with LocalBroker() as broker:
        pika.BlockingConnection(pika.URLParameters(broker.amqp_url))

CLI: ``python -m warren.localbroker start --dir DIR`` / ``stop --dir DIR``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Call the real scripts: Debian's /usr/sbin wrappers switch to the `rabbitmq` user, which
# can neither read a root-owned temp dir nor see our Erlang cookie.
_BIN_DIR = Path("/usr/lib/rabbitmq/bin")
# Ports never handed out: epmd, RabbitMQ defaults and the CLI tools' distribution range.
_RESERVED_PORTS = {4369, 5672, 15672, 25672, *range(35672, 35683)}
_STATE_FILE = "broker.json"


def _tool(name: str) -> str:
    path = _BIN_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: RabbitMQ is not installed (run `make deps`)")
    return found


def rabbitmq_installed() -> bool:
    """True if the RabbitMQ server and CLI tools can be found."""
    try:
        _tool("rabbitmq-server"), _tool("rabbitmqctl")
    except FileNotFoundError:
        return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports the OS considers free on 127.0.0.1 (all held open together, so distinct)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()
    if _RESERVED_PORTS.intersection(ports):
        return _free_ports(count)
    return ports


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed beam whose parent has not reaped it yet is a zombie: treat as dead
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


class LocalBroker:
    """One private RabbitMQ node living in ``base_dir`` (see the module docstring)."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        name: str = "warren",
        amqp_port: int | None = None,
        management_port: int | None = None,
        dist_port: int | None = None,
    ) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{name}-rabbitmq-")) if base_dir is None else Path(base_dir)
        free = iter(_free_ports(3))
        self.amqp_port = amqp_port or next(free)
        self.management_port = management_port or next(free)
        self.dist_port = dist_port or next(free)
        self._node_name = f"{name}-{secrets.token_hex(4)}@localhost"
        self.pid_file = self.base_dir / "rabbitmq.pid"

    @classmethod
    def from_dir(cls, base_dir: Path, *, name: str = "warren") -> LocalBroker:
        """The node whose state was saved in ``base_dir`` (same name, ports and data), else a new one."""
        state_file = Path(base_dir) / _STATE_FILE
        if not state_file.exists():
            return cls(Path(base_dir), name=name)
        state = json.loads(state_file.read_text())
        broker = cls(Path(base_dir), amqp_port=state["amqp_port"],
                     management_port=state["management_port"], dist_port=state["dist_port"])
        broker._node_name = state["node_name"]
        return broker

    # -- addresses -------------------------------------------------------------------------
    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def log_file(self) -> Path:
        return self.base_dir / "log" / f"{self._node_name}.log"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        """Start the node and return once AMQP and the management API both answer."""
        deadline = time.monotonic() + timeout
        if self.is_running():
            log.info("node %s already running", self._node_name)
        else:
            self._prepare()
            log.info("starting RabbitMQ node %s (amqp %d, management %d) in %s",
                     self._node_name, self.amqp_port, self.management_port, self.base_dir)
            with open(self.base_dir / "startup.log", "ab") as out:
                proc = subprocess.run([_tool("rabbitmq-server"), "-detached"], env=self._env(),
                                      cwd=self.base_dir, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=timeout)
            if proc.returncode != 0:
                self._fail(f"rabbitmq-server -detached exited with {proc.returncode}")
            wait_s = max(1, int(deadline - time.monotonic()))
            res = self.ctl("wait", "--timeout", str(wait_s), str(self.pid_file),
                           check=False, timeout=wait_s + 15)
            if res.returncode != 0:
                self._fail(f"`rabbitmqctl wait` failed ({res.returncode}): {res.stdout}{res.stderr}")
        while not (_port_open(self.amqp_port) and self._management_ok()):
            if time.monotonic() > deadline:
                self._fail(f"AMQP port {self.amqp_port} / management API not ready after {timeout}s")
            time.sleep(0.1)
        log.info("RabbitMQ node %s ready at %s", self._node_name, self.amqp_url)

    def stop(self, timeout: float = 60) -> None:
        """Stop the node gracefully (SIGKILL if that fails) and wait until its AMQP port is closed."""
        deadline = time.monotonic() + timeout
        pid = self._pid()
        if pid is not None and _pid_alive(pid):
            log.info("stopping RabbitMQ node %s", self._node_name)
            # Without a pid file argument `stop` returns as the VM starts halting; polling the pid
            # here is ~2 s faster than `rabbitmqctl stop PIDFILE`, which polls it slowly.
            res = self.ctl("stop", check=False, timeout=timeout)
            give_up = deadline if res.returncode == 0 else min(deadline, time.monotonic() + 10)
            while _pid_alive(pid):
                if time.monotonic() > give_up:
                    log.warning("node %s did not stop (%s), killing it", self._node_name,
                                (res.stdout + res.stderr).strip())
                    self.kill()
                    break
                time.sleep(0.05)
        while _port_open(self.amqp_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"AMQP port {self.amqp_port} still open {timeout}s after stopping")
            time.sleep(0.1)

    def restart(self, timeout: float = 60) -> None:
        """Stop and start again with the same node name, ports and data (durable messages survive)."""
        self.stop(timeout)
        self.start(timeout)

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL the node's Erlang VM, as a crash would (for crash tests)."""
        pid = self._pid()
        if pid is None or not _pid_alive(pid):
            return
        log.info("killing RabbitMQ node %s (pid %d)", self._node_name, pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"beam pid {pid} still alive {timeout}s after SIGKILL")
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop the node and delete its directory if this object created it."""
        try:
            self.stop()
        except Exception:  # never leave a node behind
            log.exception("stopping %s failed, killing it", self._node_name)
            self.kill()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def is_running(self) -> bool:
        pid = self._pid()
        return pid is not None and _pid_alive(pid)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- helpers ---------------------------------------------------------------------------
    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE *args`` against this node."""
        res = subprocess.run([_tool("rabbitmqctl"), "-n", self._node_name, *args], env=self._env(),
                             cwd=self.base_dir, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({res.returncode}): "
                               f"{res.stdout}{res.stderr}")
        return res

    def management_get(self, path: str, timeout: float = 10) -> Any:
        """GET ``path`` (e.g. ``/api/queues/%2F/q``; ``/api`` is prefixed if missing) as parsed JSON."""
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith("/api/"):
            path = "/api" + path
        request = urllib.request.Request(self.management_url + path)
        request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())

    def _management_ok(self) -> bool:
        try:
            self.management_get("/api/overview", timeout=2)
            return True
        except (OSError, ValueError):  # URLError/HTTPError are OSErrors
            return False

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _prepare(self) -> None:
        (self.base_dir / "log").mkdir(parents=True, exist_ok=True)
        (self.base_dir / "mnesia").mkdir(exist_ok=True)
        self.pid_file.unlink(missing_ok=True)  # stale after kill(): `rabbitmqctl wait` would trust it
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.amqp_port}\n"
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n")
        (self.base_dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        cookie = self.base_dir / ".erlang.cookie"
        if not cookie.exists():  # written up front so the node and the CLI never race to create it
            cookie.write_text("".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(20)))
            cookie.chmod(0o400)
        (self.base_dir / _STATE_FILE).write_text(json.dumps({
            "node_name": self._node_name, "amqp_port": self.amqp_port,
            "management_port": self.management_port, "dist_port": self.dist_port,
            "amqp_url": self.amqp_url, "management_url": self.management_url}, indent=2) + "\n")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        d = self.base_dir
        env.update(
            HOME=str(d), RABBITMQ_NODENAME=self._node_name, RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port), RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"), RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq"),  # without ".conf", as the scripts expect
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),  # absent: keep /etc out
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),  # absent: keep /etc out
            ERL_EPMD_ADDRESS="127.0.0.1")
        return env

    def _fail(self, message: str) -> None:
        tails = []
        for path in (self.base_dir / "startup.log", self.log_file):
            try:
                lines = path.read_text(errors="replace").splitlines()[-40:]
            except OSError:
                continue
            tails.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
        raise RuntimeError(f"RabbitMQ node {self._node_name}: {message}\n" + "\n".join(tails))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warren.localbroker", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True, help="node directory (kept between runs)")
    parser.add_argument("--name", default="warren", help="node name prefix for a new node")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.command == "start":
        args.dir.mkdir(parents=True, exist_ok=True)
        broker = LocalBroker.from_dir(args.dir.resolve(), name=args.name)
        broker.start(args.timeout)
        print(f"management: {broker.management_url} (guest/guest)", file=sys.stderr)
        print(broker.amqp_url)
    else:
        if not (args.dir / _STATE_FILE).exists():
            print(f"no broker state in {args.dir}", file=sys.stderr)
            return 1
        LocalBroker.from_dir(args.dir.resolve()).stop(args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
