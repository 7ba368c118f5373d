"""A private PostgreSQL cluster on a loopback port, for trials that restart the database.

Restarting the machine's own PostgreSQL would pull the database from under every other test
using it, so trials that restart PostgreSQL mid-run start their own cluster with the Debian
binaries (``/usr/lib/postgresql/*/bin``; ``scripts/ci-deps`` installs them), in a directory of
their own, listening on 127.0.0.1 only, trust authentication, and remove it afterwards.
PostgreSQL refuses to run as root, so as root the binaries run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the cluster did not start."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise ClusterUnavailable("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (run scripts/ci-deps)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    def __init__(self) -> None:
        self.bin = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="stagehold-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.restarts = 0
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ClusterUnavailable(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> PrivateCluster:
        os.chmod(self.root, 0o755)
        self.data.mkdir(mode=0o700)
        if self._as_postgres:  # the server writes its socket lock beside the data directory
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.data, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=300"
        self._run(
            "pg_ctl",
            action,
            "-D",
            str(self.data),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(self.data / "log"),
            *extra,
        )

    def restart(self) -> None:
        """An immediate stop (no clean shutdown: recovery replays the WAL), then start again."""
        self._pg_ctl("restart", "-m", "immediate")
        self.restarts += 1

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(ClusterUnavailable, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
        shutil.rmtree(self.root, ignore_errors=True)


class Peek:
    """The harness's own reads of a trial database: one connection, and no answer (``[]``) while
    the database restarts or before the tables exist — the next poll asks again."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def __call__(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, connect_timeout=5, autocommit=True)
            return list(self._conn.execute(sql, params).fetchall())
        except psycopg.Error:
            self.close()
            return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
