"""A throwaway PostgreSQL server for the tests, from Debian's `postgresql` package (no Docker, no network).

    server = PostgresServer.start()       # initdb + pg_ctl start in a temporary directory, loopback only
    name = server.create_database()       # a fresh, empty database (CREATE DATABASE is fast)
    url = server.url(name)                # postgresql://coinage@127.0.0.1:PORT/NAME (trust authentication)
    server.drop_database(name)
    server.stop()                         # and the directory is removed

PostgreSQL refuses to run as root: as root the binaries run as the `postgres` user (runuser), in a
directory handed to that user. The fixtures are in tests/conftest.py (postgres_server, postgres_url,
database_url). Durability is off (fsync, synchronous_commit): the data is thrown away anyway.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg  # bound here, so tests may hide the driver from the code under test (sys.modules) meanwhile

USER = "coinage"  # the superuser initdb creates
INSTALL = "install the server with `apt-get install postgresql` (`make test` does it)"


class PostgresUnavailable(Exception):
    """No PostgreSQL binaries here (the tests that need them are skipped with this message)."""


def find_bin_dir() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, else the newest /usr/lib/postgresql/<major>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: Path, directory: Path, port: int, run_as: str | None):
        self.bin_dir, self.directory, self.port, self.run_as = bin_dir, directory, port, run_as
        self.data = directory / "data"

    @classmethod
    def start(cls) -> "PostgresServer":
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable(f"PostgreSQL binaries (initdb, pg_ctl) not found: {INSTALL}")
        run_as = None
        directory = Path(tempfile.mkdtemp(prefix="coinage-pg-"))  # under /tmp: the postgres user can reach it
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as e:
                shutil.rmtree(directory)
                raise PostgresUnavailable(f"running as root, and there is no `postgres` user to run the server as: "
                                          f"{INSTALL}") from e
            os.chown(directory, user.pw_uid, user.pw_gid)
            run_as = "postgres"
        server = cls(bin_dir, directory, _free_port(), run_as)
        try:
            server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync")
            options = (f"-k {directory} -p {server.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            server._run("pg_ctl", "-D", str(server.data), "-l", str(directory / "server.log"), "-o", options,
                        "-w", "-t", "120", "start")
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin_dir / tool), *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        done = subprocess.run(argv, cwd=self.directory, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}\n{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").is_file():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
