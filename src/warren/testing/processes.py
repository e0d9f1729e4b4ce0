"""Worker processes on this machine (``python -m warren worker POOL``), for the demo and the tests.

They are started, signalled and killed for real; readiness is read from the worker's own log line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The child runs the same warren as its parent, whatever else is installed.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


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
            env={
                **os.environ,
                **env,
                "WARREN_HEALTH_FILE": str(self.health_path),
                "PYTHONPATH": child_python_path(env),
            },
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
