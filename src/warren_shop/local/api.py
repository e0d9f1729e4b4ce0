"""The API role as a process on this machine, with a tiny HTTP client.

It is given an API key holding every scope (written to a keys file beside its log, as the chart
mounts its Secret), and its client sends it, unless ``env`` configures the API's authentication
itself (``WARREN_API_KEYS_FILE`` or ``WARREN_API_AUTH``). One client makes all the requests, so
its rate limit is raised unless ``env`` sets one.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from warren.testing.broker import free_ports
from warren.testing.processes import child_python_path


class LocalApi:
    """The API role as a process on this machine (``python -m warren_shop api``), with a tiny client."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.key: str | None = None
        env = {"WARREN_API_RATE_LIMIT": "10000", "WARREN_API_RATE_BURST": "10000", **env}
        if "WARREN_API_KEYS_FILE" not in env and "WARREN_API_AUTH" not in env:
            self.key = secrets.token_urlsafe(24)
            keys_file = log_dir / f"api-keys-{secrets.token_hex(4)}"
            keys_file.write_text(f"local admin {self.key}\n")
            keys_file.chmod(0o600)
            env["WARREN_API_KEYS_FILE"] = str(keys_file)
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / "api.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warren_shop", "api"],
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

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
             ) -> tuple[int, Any]:
        """(status, decoded JSON body); status 0 when nothing answered."""
        data = None if body is None else json.dumps(body).encode()
        auth = {"authorization": f"Bearer {self.key}"} if self.key else {}
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"content-type": "application/json", **auth, **(headers or {})},
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
