"""Worker and API processes on this machine (``python -m warren worker POOL``, ``... api``), for the
demo and the tests.

They are started, signalled and killed for real; readiness is read from the worker's own log line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


# The child runs the same warren as its parent, whatever else is installed.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[1])


def child_python_path(env: dict[str, str]) -> str:
    rest = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    return os.pathsep.join(p for p in (_SOURCE_ROOT, rest) if p)


class LocalWorker:
    def __init__(self, env: dict[str, str], log_dir: Path, *, pool: str = "selftest", name: str = "w") -> None:
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        self.health_path = log_dir / f"worker-{name}.health"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warren", "worker", pool],
            env={**os.environ, **env, "WARREN_HEALTH_FILE": str(self.health_path), "PYTHONPATH": child_python_path(env)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"worker {self.name}: no {text!r} within {timeout}s:\n{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = 30.0) -> LocalWorker:
        """Poll until the worker's health file says it is consuming."""
        deadline = time.monotonic() + timeout
        while not self.health_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} not consuming within {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


class LocalApi:
    """The API role as a process on this machine (``python -m warren api``), with a tiny client."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / "api.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warren", "api"],
            env={**os.environ, **env, "WARREN_API_HOST": "127.0.0.1", "WARREN_API_PORT": str(port),
                 "PYTHONPATH": child_python_path(env)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> LocalApi:
        """Poll ``/readyz`` until the API answers 200 (it is connected to the broker)."""
        deadline = time.monotonic() + timeout
        while self.call("GET", "/readyz")[0] != 200:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"API not ready within {timeout}s:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON body); status 0 when nothing answered."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        except OSError:
            return 0, None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self._log.close()
