"""A private PostgreSQL cluster on this machine, for the tests, the benchmark and the demo."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def postgresql_installed() -> bool:
    return _postgres_bin_dir() is not None


def _postgres_bin_dir() -> Path | None:
    """Debian keeps the server programs out of the PATH, one directory per major version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and (Path(on_path).parent / "initdb").exists() else None


class LocalPostgres:
    """A private PostgreSQL cluster in a temp dir, on a free port on 127.0.0.1, from Debian's
    ``postgresql`` package: never the system cluster, its port or its files. A test may stop and
    start it on purpose. Run as root it runs the server as the ``postgres`` user (PostgreSQL
    refuses to run as root), so its directory is made in /tmp, which that user can reach.

        with LocalPostgres() as pg:
            url = pg.create_database("shop")   # postgresql://warren@127.0.0.1:PORT/shop

    ``durable=False`` turns fsync off: quicker tests; a crash of the machine (not of the server)
    could then lose data.
    """

    user = "warren"

    def __init__(self, *, durable: bool = True, name: str = "warren") -> None:
        bin_dir = _postgres_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (pg_ctl, initdb): run `make deps`")
        self.bin_dir = bin_dir
        self.durable = durable
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{name}-postgres-"))
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.base_dir, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, timeout: float = 90) -> None:
        done = subprocess.run([*self._as, str(self.bin_dir / program), *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}\n{log}")

    def start(self) -> LocalPostgres:
        """initdb (the first time), then start and wait until it accepts connections."""
        if not self.data_dir.exists():
            self._run("initdb", "-D", str(self.data_dir), "-U", self.user, "-A", "trust", "-E", "UTF8",
                      "--no-instructions", *([] if self.durable else ["--no-sync"]))
        options = f"-p {self.port} -k {self.base_dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"  # commits still reach the OS: a killed server loses none
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "-t", "60",
                  "start")
        return self

    def stop(self, *, immediately: bool = False) -> None:
        """Stop the server: cleanly, or ``immediately`` as if it crashed (it recovers on start)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate" if immediately else "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """A new database (a copy of ``template`` if given), and its URL."""
        import psycopg
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(statement)
        return self.url(name)

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError):  # it died on its own: its files go anyway
                self.stop(immediately=True)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *_: object) -> None:
        self.destroy()
