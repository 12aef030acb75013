"""A real PostgreSQL 15 server of the test session's own: initdb into a temporary folder, pg_ctl start, a database.

``initdb`` refuses to run as root, and CI runs as root: then every server
command runs as an unprivileged system user (``postgres`` if the package
made it, else ``nobody``) through ``runuser``, in a folder made for it under
the system's temporary directory (pytest's own folders are private to root).
The server listens on 127.0.0.1 on a free port and on a unix socket in that
folder, trusts local connections (no password: nothing else can reach it),
and is stopped and deleted by :meth:`Postgres.stop`. Readiness is
``pg_ctl start --wait``; nothing sleeps a fixed time.

``fsync`` is off unless asked for: a test server need not survive a power
cut, and the benchmark turns it on to compare with SQLite's FULL.

>>> Postgres(fsync=True).settings()[-2:]
['-c', 'fsync=on']
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
USERS = ("postgres", "nobody")


def missing() -> str | None:
    """Why no server can be started here (None if one can)."""
    if not (BIN / "initdb").is_file():
        return f"PostgreSQL 15 is not installed ({BIN}/initdb is missing); run make system-deps, which installs it"
    if os.geteuid() == 0 and not (_user() and shutil.which("runuser")):
        return f"running as root, but neither a user {' nor '.join(USERS)} nor runuser exists to run initdb as"
    return None


def _user() -> str | None:
    for name in USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One server: :meth:`start` it, :meth:`url` a database on it, :meth:`stop` it (and delete its files)."""

    def __init__(self, *, fsync: bool = False):
        self.fsync, self.port, self.folder = fsync, _free_port(), None

    def settings(self) -> list[str]:
        return ["-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}", "-c", "max_connections=50",
                "-c", f"fsync={'on' if self.fsync else 'off'}"]

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _user(), "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr or done.stdout}"
                               + self.log())
        return done

    def start(self) -> Postgres:
        self.folder = Path(tempfile.mkdtemp(prefix="edgeml-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_user())
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-U", "edgeml", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = " ".join([*self.settings(), "-c", f"unix_socket_directories={self.folder}"])
        self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "server.log"), "-o", options, "-w", "start")
        return self

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="edgeml", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """Create the (empty) database ``name``; its SQLAlchemy URL."""
        self._sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._sql(f'DROP DATABASE "{name}" WITH (FORCE)')

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://edgeml@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.folder / "server.log" if self.folder else None
        return f"\n--- server.log ---\n{path.read_text()[-3000:]}" if path and path.exists() else ""

    def stop(self) -> None:
        if self.folder is None:
            return
        try:
            if (self.folder / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
