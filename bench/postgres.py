"""A throwaway PostgreSQL cluster on 127.0.0.1 with a password-protected role, for the tests
and the benchmarks that need a real server (Debian's postgresql, which .ci/run installs).
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional


def postgres_bindir() -> Optional[Path]:
    """The newest installed PostgreSQL's bin directory, or None if there is none."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(bins[-1]).parent if bins else None


def _as_postgres(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True,
                   timeout=120)


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway cluster: `url` to connect; `stop` and `start` take the server away
    and bring it back on the same port and data (a database outage, for the fault tests)."""

    url: str
    data: Path
    port: int
    bindir: Path

    def stop(self) -> None:
        """Stop the server at once (open connections are cut, as when a server goes away)."""
        _as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                     "-w", "stop")

    def start(self, max_connections: int = 200) -> None:
        _as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                     str(self.data / "log"), "-o",
                     f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 "
                     f"-c max_connections={max_connections}", "start")


@contextlib.contextmanager
def throwaway_postgres_server(password: str, max_connections: int = 200
                              ) -> Iterator[PostgresServer]:
    """Start a cluster with role `rlsweep` (that password) owning database `optuna`; yield it;
    stop and delete the cluster on exit."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("Debian's postgresql is not installed (.ci/run installs it)")
    root = Path(tempfile.mkdtemp(prefix="rlsweep-pg-"))  # /tmp: postgres must be able to enter it
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                 "--auth-local=trust", "--auth-host=scram-sha-256")
    server = PostgresServer(f"postgresql://rlsweep:{password}@127.0.0.1:{port}/optuna", data,
                            port, bindir)
    server.start(max_connections)
    try:
        psql = [str(bindir / "psql"), "-h", str(data), "-p", str(port), "-U", "postgres", "-c"]
        _as_postgres(*psql, f"CREATE ROLE rlsweep LOGIN PASSWORD '{password}'")
        _as_postgres(*psql, "CREATE DATABASE optuna OWNER rlsweep")
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres(password: str, max_connections: int = 200) -> Iterator[str]:
    """Start a cluster with role `rlsweep` (that password) owning database `optuna`; yield its
    URL; stop and delete the cluster on exit."""
    with throwaway_postgres_server(password, max_connections) as server:
        yield server.url


def on_throwaway_postgres(password: str, run: Callable[[str], dict]) -> dict:
    """`run(url)` on a throwaway cluster, for a benchmark's PostgreSQL row; the row says
    "skipped" where Debian's postgresql is not installed (the SQLite rows still run)."""
    if postgres_bindir() is None:
        return {"storage": "postgresql", "skipped": "postgresql is not installed"}
    with throwaway_postgres(password) as url:
        return run(url)
