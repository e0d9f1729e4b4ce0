"""A private, throwaway RabbitMQ node for tests, benchmarks and ``make demo``.

Warren's guarantees (at-least-once delivery, dead-lettering, surviving broker restarts) only
mean something against a real broker, so the tests, the benchmarks and the demo each need a
RabbitMQ node of their own: one that never touches a system broker, the default ports or
/var/lib/rabbitmq, and that a test may stop, restart or SIGKILL on purpose. ``LocalBroker``
runs such a node from the Debian ``rabbitmq-server`` package as the current user, with every
file (config, data, logs, pid file, Erlang cookie) in one directory and every port picked free.

    with LocalBroker() as broker:
        pika.BlockingConnection(pika.URLParameters(broker.amqp_url))

CLI (used by ``make demo``): ``python -m warren.testing.broker start|stop --dir DIR``.
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
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The real scripts: Debian's /usr/sbin wrappers switch to the `rabbitmq` user, which can
# neither read a root-owned temp dir nor use our Erlang cookie.
_BIN_DIR = Path("/usr/lib/rabbitmq/bin")
# Never handed out: epmd, RabbitMQ's default ports and the CLI tools' distribution range.
_RESERVED_PORTS = {4369, 5672, 15672, 25672, *range(35672, 35683)}
_STATE_FILE = "broker.json"

# RabbitMQ application settings Warren's brokers run with (the chart's advanced.config sets the
# same): a quorum queue's at-least-once dead letter that found no queue ready to take it (the
# target's replica still recovering after a restart or a failover) is sent again after this many
# ms; RabbitMQ's default, 180 s, holds every delayed task and retry expiring in that moment for
# three minutes.
RABBIT_SETTINGS: dict[str, int] = {"dead_letter_worker_publisher_confirm_timeout": 10_000}


def rabbit_advanced_config(**rabbit: int) -> str:
    """An advanced.config with ``RABBIT_SETTINGS`` and ``rabbit`` (which win) for the rabbit application."""
    terms = ", ".join(f"{{{key}, {value}}}" for key, value in {**RABBIT_SETTINGS, **rabbit}.items())
    return f"[{{rabbit, [{terms}]}}].\n"


def _tool(name: str) -> str:
    if (_BIN_DIR / name).exists():
        return str(_BIN_DIR / name)
    if found := shutil.which(name):
        return found
    raise FileNotFoundError(f"{name} not found: RabbitMQ is not installed (run `make deps`)")


def rabbitmq_installed() -> bool:
    """True if the RabbitMQ server and its CLI tools can be found."""
    return all(((_BIN_DIR / n).exists() or shutil.which(n)) for n in ("rabbitmq-server", "rabbitmqctl"))


def free_ports(count: int) -> list[int]:
    """Distinct ports the OS considers free on 127.0.0.1 (all sockets are held open together),
    none of RabbitMQ's usual ones."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    return free_ports(count) if _RESERVED_PORTS.intersection(ports) else ports


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
    try:  # a killed beam that is not reaped yet is a zombie: dead for us
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone, unless there is no /proc at all


class LocalBroker:
    """One private RabbitMQ node living in ``base_dir`` (see the module docstring)."""

    def __init__(self, base_dir: Path | None = None, *, name: str = "warren",
                 amqp_port: int | None = None, management_port: int | None = None,
                 dist_port: int | None = None, config: str = "", advanced_config: str | None = None) -> None:
        """``config``: extra rabbitmq.conf lines (``consumer_timeout = 2000``); ``advanced_config``:
        the whole advanced.config (an Erlang term list; ``rabbit_advanced_config(...)`` builds one), for
        keys rabbitmq.conf cannot set; ``RABBIT_SETTINGS`` when not given."""
        self._owns_dir = base_dir is None
        self._config = config
        self._advanced_config = advanced_config if advanced_config is not None else rabbit_advanced_config()
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"{name}-rabbitmq-"))
        free = iter(free_ports(3))
        self.amqp_port = amqp_port or next(free)
        self.management_port = management_port or next(free)
        self.dist_port = dist_port or next(free)
        self._node_name = f"{name}-{secrets.token_hex(4)}@localhost"
        self.pid_file = self.base_dir / "rabbitmq.pid"

    @classmethod
    def from_dir(cls, base_dir: Path, *, name: str = "warren") -> LocalBroker:
        """The node saved in ``base_dir/broker.json`` (same name, ports, data), or a new one there."""
        state_file = Path(base_dir) / _STATE_FILE
        if not state_file.exists():
            return cls(Path(base_dir), name=name)
        state = json.loads(state_file.read_text())
        broker = cls(Path(base_dir), amqp_port=state["amqp_port"],
                     management_port=state["management_port"], dist_port=state["dist_port"])
        broker._node_name = state["node_name"]
        return broker

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "log" / f"{self._node_name}.log"

    def start(self, timeout: float = 60) -> None:
        """Start the node; return once AMQP accepts connections and the management API answers."""
        deadline = time.monotonic() + timeout
        if not self.is_running():
            self._prepare()
            log.info("starting RabbitMQ node %s (amqp %d, management %d) in %s",
                     self._node_name, self.amqp_port, self.management_port, self.base_dir)
            with open(self.base_dir / "startup.log", "ab") as out:
                rc = subprocess.run([_tool("rabbitmq-server"), "-detached"], env=self._env(),
                                    cwd=self.base_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    timeout=timeout).returncode
            if rc != 0:
                self._fail(f"`rabbitmq-server -detached` exited with {rc}")
            wait_s = max(1, int(deadline - time.monotonic()))
            res = self.ctl("wait", "--timeout", str(wait_s), str(self.pid_file),
                           check=False, timeout=wait_s + 15)
            if res.returncode != 0:
                self._fail(f"`rabbitmqctl wait` failed ({res.returncode}): {res.stdout}{res.stderr}")
        while not (_port_open(self.amqp_port) and self._management_ok()):
            if time.monotonic() > deadline:
                self._fail(f"AMQP port {self.amqp_port} or management API not ready after {timeout}s")
            time.sleep(0.1)
        log.info("RabbitMQ node %s ready at %s", self._node_name, self.amqp_url)

    def stop(self, timeout: float = 60) -> None:
        """Stop the node gracefully (SIGKILL if that fails); return once its AMQP port is closed."""
        deadline = time.monotonic() + timeout
        pid = self._pid()
        if pid is not None and _pid_alive(pid):
            log.info("stopping RabbitMQ node %s", self._node_name)
            # Without a pid file `stop` returns as the VM starts halting; polling the pid here is
            # ~2 s faster than `rabbitmqctl stop PIDFILE`, which checks it only now and then.
            res = self.ctl("stop", check=False, timeout=timeout)
            give_up = deadline if res.returncode == 0 else min(deadline, time.monotonic() + 10)
            while _pid_alive(pid):
                if time.monotonic() > give_up:
                    log.warning("node %s did not stop, killing it: %s", self._node_name, res.stderr.strip())
                    self.kill(flush_metadata=False)
                time.sleep(0.05)
            while _port_open(self.amqp_port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"AMQP port {self.amqp_port} still open {timeout}s after stopping")
                time.sleep(0.05)

    def restart(self, timeout: float = 60) -> None:
        """Stop, then start with the same node name, ports and data: durable messages survive."""
        self.stop(timeout)
        self.start(timeout)

    def kill(self, timeout: float = 30, *, flush_metadata: bool = True) -> None:
        """SIGKILL the node's Erlang VM, as a crash would.

        RabbitMQ 3.10 saves its quorum-queue registry (Ra's DETS files) only every 0.5-5 s: a
        queue declared just before a real crash comes back leaderless and unusable. With
        ``flush_metadata`` (the default) those files are synced first, so crash tests exercise
        Warren rather than that window; pass False to crash exactly as a power cut would.
        """
        pid = self._pid()
        if pid is None or not _pid_alive(pid):
            return
        if flush_metadata:
            res = self.ctl("eval", "[dets:sync(T) || T <- dets:all()].", check=False, timeout=15)
            if res.returncode != 0:
                log.warning("could not sync %s's metadata before SIGKILL: %s", self._node_name, res.stderr)
        log.info("killing RabbitMQ node %s (pid %d)", self._node_name, pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        # The listener can outlive the pid by a moment here (gVisor): wait for both.
        while _pid_alive(pid) or _port_open(self.amqp_port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self._node_name} (pid {pid}) still up {timeout}s after SIGKILL")
            time.sleep(0.05)

    def destroy(self) -> None:
        """Stop the node (killing it if need be) and delete ``base_dir`` if this object created it."""
        try:
            self.stop()
        except Exception:  # never leave a node behind
            log.exception("stopping %s failed, killing it", self._node_name)
            self.kill(flush_metadata=False)
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def is_running(self) -> bool:
        pid = self._pid()
        return pid is not None and _pid_alive(pid)

    def __enter__(self) -> LocalBroker:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE *args`` against this node (RuntimeError on failure if ``check``)."""
        res = subprocess.run([_tool("rabbitmqctl"), "-n", self._node_name, *args], env=self._env(),
                             cwd=self.base_dir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({res.returncode}): "
                               f"{res.stdout}{res.stderr}")
        return res

    def management_get(self, path: str, timeout: float = 10) -> Any:
        """GET a management API path (``/api/queues/%2F/q``; ``/api`` is added if missing), parsed JSON."""
        path = "/" + path.lstrip("/")
        if not path.startswith("/api/"):
            path = "/api" + path
        request = urllib.request.Request(self.management_url + path, headers={
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())

    def _management_ok(self) -> bool:
        try:
            self.management_get("/api/overview", timeout=2)
            return True
        except (OSError, ValueError):  # URLError and HTTPError are OSErrors
            return False

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _prepare(self) -> None:
        d = self.base_dir
        (d / "log").mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)  # stale after kill(): `rabbitmqctl wait` would trust it
        (d / "rabbitmq.conf").write_text(f"listeners.tcp.default = {self.amqp_port}\n"
                                         f"management.tcp.port = {self.management_port}\n"
                                         "management.tcp.ip = 127.0.0.1\n"
                                         # Queue stats every second, not every 5 s: the demo's
                                         # live view and the operator's tests read them.
                                         "collect_statistics_interval = 1000\n"
                                         + (self._config.strip() + "\n" if self._config.strip() else ""))
        (d / "advanced.config").write_text(self._advanced_config)
        (d / "enabled_plugins").write_text("[rabbitmq_management].\n")
        cookie = d / ".erlang.cookie"
        if not cookie.exists():  # written first, so the node and the CLI never race to create it
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)
        (d / _STATE_FILE).write_text(json.dumps({
            "node_name": self._node_name, "amqp_port": self.amqp_port, "management_port": self.management_port,
            "dist_port": self.dist_port, "amqp_url": self.amqp_url, "management_url": self.management_url},
            indent=2) + "\n")

    def _env(self) -> dict[str, str]:
        d = self.base_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            HOME=str(d), RABBITMQ_NODENAME=self._node_name, RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port), RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"), RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq"),  # the scripts add ".conf"
            # Both absent: keeps /etc/rabbitmq out of our node.
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS="127.0.0.1")
        return env

    def _fail(self, message: str) -> None:
        tails = []
        for path in (self.base_dir / "startup.log", self.log_file):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-40:]
                tails.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
        pid = self._pid()
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)  # never leave a half-started VM behind
        raise RuntimeError(f"RabbitMQ node {self._node_name}: {message}\n" + "\n".join(tails))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warren.testing.broker",
                                     description="Start or stop a private RabbitMQ node kept in DIR.")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True, help="node directory (kept between runs)")
    parser.add_argument("--name", default="warren", help="node name prefix, for a new node")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    base_dir = args.dir.resolve()
    if args.command == "start":
        base_dir.mkdir(parents=True, exist_ok=True)
        broker = LocalBroker.from_dir(base_dir, name=args.name)
        broker.start(args.timeout)
        print(f"management: {broker.management_url} (guest/guest)", file=sys.stderr)
        print(broker.amqp_url)
    elif (base_dir / _STATE_FILE).exists():
        LocalBroker.from_dir(base_dir).stop(args.timeout)
    else:
        print(f"no broker in {base_dir} (no {_STATE_FILE})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
