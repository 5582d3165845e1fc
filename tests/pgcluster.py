"""A throw-away PostgreSQL cluster for tests: Debian's server binaries, `initdb` and `pg_ctl`
run as the system's PostgreSQL account (the owner of Debian's PostgreSQL home), listening on
loopback only, on a free port, with its data under the local cluster's state directory
(`STATE/postgres/pg-*`, or a directory given); stopped and removed by `stop()`."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def server_bin() -> Path | None:
    """Debian's newest installed server's bindir (/usr/lib/postgresql/N/bin), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def account() -> pwd.struct_passwd:
    """The account Debian's postgresql package made: the owner of its home directory."""
    return pwd.getpwuid(Path("/var/lib/postgresql").stat().st_uid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb + pg_ctl start under `state_dir`/postgres; `url(db)` for a database in it."""

    def __init__(self, state_dir: str | Path | None = None):
        self.bin = server_bin()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql; make apt installs it")
        self.user = account()
        if state_dir is None:  # under the local cluster's state directory, as its other daemons
            parent = Path(os.environ.get("SHIFTER_CLUSTER_STATE", "/var/lib/shifter-cluster")) / "postgres"
            parent.mkdir(parents=True, exist_ok=True)
            state_dir = tempfile.mkdtemp(prefix="pg-", dir=parent)
        self.base = Path(state_dir)
        self.data = self.base / "postgres"
        self.port = free_port()
        os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self._as_user(["initdb", "-D", str(self.data), "-A", "trust", "-U", self.user.pw_name, "-E", "UTF8",
                       "--no-sync"])
        self._as_user(["pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.base / "server.log"),
                       "-o", f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories= "
                             f"-c fsync=off -c max_connections=200", "start"])

    def _as_user(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", self.user.pw_name, "--", str(self.bin / argv[0]), *argv[1:]],
                              check=True, capture_output=True, text=True, cwd=self.base, timeout=120)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user.pw_name}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url().replace("postgresql://", "postgresql+psycopg://"),
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url(name)

    def pids(self) -> list[int]:
        """The server's processes (the postmaster and its children)."""
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return []
        main = int(pidfile.read_text().split()[0])
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True, text=True).stdout
        return [main, *map(int, out.split())]

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_user(["pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop"])
        shutil.rmtree(self.base, ignore_errors=True)
