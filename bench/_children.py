"""Benchmark subprocesses: each in its own process group, logged to a file, always stopped.

A child reports its result as one JSON line on stdout when it exits. Leaving the ``with`` block,
normally or through an exception (Ctrl-C included), stops the whole process group: SIGTERM,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent


class CaseFailed(RuntimeError):
    """A benchmark case could not produce a measurement."""


class Child:
    """One subprocess started in the repository root with the repository on ``PYTHONPATH``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        json_stdout: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or {})
        self.json_stdout = json_stdout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def python_module(cls, name: str, module: str, *args: str, log_path: Path, **options: Any) -> Child:
        return cls(name, [sys.executable, "-m", module, *args], log_path=log_path, **options)

    def __enter__(self) -> Child:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self._log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.json_stdout else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The child's pid, which is also its process group's id (None before it starts)."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_running(self) -> None:
        if not self.running:
            raise CaseFailed(f"{self.name} exited early ({self._returncode()})\n{self.log_tail()}")

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the child to exit and return the last JSON object line it printed."""
        assert self._proc is not None and self.json_stdout
        try:
            out, _ = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CaseFailed(f"{self.name} did not finish within {timeout:.0f}s\n{self.log_tail()}") from None
        reports = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        if self._proc.returncode != 0 or not reports:
            raise CaseFailed(f"{self.name} failed ({self._returncode()})\n{self.log_tail()}")
        return json.loads(reports[-1])

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; closes the log."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)  # stragglers (e.g. Celery's pool processes)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(tail)

    def _returncode(self) -> str:
        code = None if self._proc is None else self._proc.poll()
        return "not started" if self._proc is None else f"exit code {code}"


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
