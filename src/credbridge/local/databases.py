"""Redis and MariaDB as local processes, for the tests of verification checks.

Database checks must be tried against real servers with right and wrong passwords, the way the
Flowise tests use a real PostgreSQL. Both come from Debian's packages (`redis-server`,
`mariadb-server`): `install` puts them on the machine with apt-get when they are missing (the
packages stay installed, so later runs skip it), and each server type starts one process on a
free loopback port with a private directory and stops it again. No system service is started.

    python -m credbridge.local.databases install
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

PACKAGES = {"redis-server": "redis-server", "mariadb-server": "mariadbd"}
"""Debian package -> the program it installs that the tests run."""
_PROGRAM_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
_POLICY_RC = pathlib.Path("/usr/sbin/policy-rc.d")


class LocalDatabaseError(RuntimeError):
    """A local database server could not be installed or started; the message says what to do."""


def program(name: str) -> pathlib.Path | None:
    """Where `name` is installed, or None."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *_PROGRAM_DIRS]))
    return pathlib.Path(found) if found else None


def missing_packages() -> list[str]:
    """The Debian packages whose program is not installed."""
    return [package for package, name in PACKAGES.items() if program(name) is None]


def install(*, progress: bool = True) -> None:
    """Installs the missing packages with apt-get, without starting their system services."""
    missing = missing_packages()
    if not missing:
        if progress:
            print(f"databases: {', '.join(PACKAGES)} already installed")
        return
    if shutil.which("apt-get") is None:
        raise LocalDatabaseError(f"{', '.join(missing)} not installed and there is no apt-get: install them by hand")
    if os.geteuid() != 0:
        raise LocalDatabaseError(
            f"{', '.join(missing)} not installed: run `sudo apt-get install -y {' '.join(missing)}`"
        )
    if progress:
        print(f"databases: installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Debian's way to keep package scripts from starting services (there may be no init system).
    created_policy = not _POLICY_RC.exists()
    if created_policy:
        _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        _POLICY_RC.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=None if progress else subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as error:
        raise LocalDatabaseError(f"apt-get failed ({error.returncode}) installing {', '.join(missing)}") from None
    finally:
        if created_policy:
            _POLICY_RC.unlink(missing_ok=True)
    still = missing_packages()
    if still:
        raise LocalDatabaseError(f"apt-get finished but {', '.join(still)} still has no program on this machine")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, popen: subprocess.Popen[bytes], log: pathlib.Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise LocalDatabaseError(f"the server exited with {popen.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise LocalDatabaseError(f"the server did not listen on port {port} within {timeout:g} seconds; see {log}")


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


@dataclasses.dataclass
class RedisServer:
    """A redis-server on 127.0.0.1 with a password (and an ACL user `checker`) and no persistence."""

    port: int
    password: str
    directory: pathlib.Path
    popen: subprocess.Popen[bytes]
    user: str = "checker"
    """A second user with its own password (`user_password`), allowed to run PING only."""
    user_password: str = ""

    @classmethod
    def start(cls, *, password: str, user_password: str, timeout: float = 60.0) -> RedisServer:
        binary = program("redis-server")
        if binary is None:
            raise LocalDatabaseError("redis-server is not installed: run `make databases`")
        directory = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-redis-"))
        port = _free_port()
        log = directory / "redis.log"
        config = directory / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"dir {directory}",
                    'save ""',
                    "appendonly no",
                    f"requirepass {password}",
                    f"user checker on >{user_password} ~* -@all +ping +hello +auth +client",
                    "",
                ]
            )
        )
        config.chmod(0o600)
        with log.open("wb") as out:
            popen = subprocess.Popen([str(binary), str(config)], stdout=out, stderr=subprocess.STDOUT)
        server = cls(port, password, directory, popen, user_password=user_password)
        try:
            _wait_for_port(port, popen, log, timeout)
        except LocalDatabaseError:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        _stop(self.popen)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclasses.dataclass
class MariaDBServer:
    """A mariadbd on 127.0.0.1 with a user `checker` (and its password) and a database `checks`."""

    port: int
    directory: pathlib.Path
    popen: subprocess.Popen[bytes]
    user: str = "checker"
    password: str = ""
    database: str = "checks"

    @classmethod
    def start(cls, *, password: str, timeout: float = 120.0) -> MariaDBServer:
        server_binary, install_db = program("mariadbd"), program("mariadb-install-db")
        if server_binary is None or install_db is None:
            raise LocalDatabaseError("mariadb-server is not installed: run `make databases`")
        directory = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-mariadb-"))
        data, run = directory / "data", directory / "run"
        data.mkdir()
        run.mkdir()
        log = directory / "mariadb.log"
        as_user: list[str] = []
        if os.geteuid() == 0:
            # mariadbd will not run as root; Debian's package creates the mysql user.
            shutil.chown(directory, "mysql")
            for path in (data, run):
                shutil.chown(path, "mysql")
            as_user = ["--user=mysql"]
        with log.open("wb") as out:
            subprocess.run(
                [
                    str(install_db),
                    "--no-defaults",
                    f"--datadir={data}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    *as_user,
                ],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        port = _free_port()
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [
                    str(server_binary),
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--socket={run / 'mariadb.sock'}",
                    f"--pid-file={run / 'mariadb.pid'}",
                    f"--port={port}",
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=16M",
                    "--performance-schema=OFF",
                    *as_user,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(port, directory, popen, password=password)
        try:
            _wait_for_port(port, popen, log, timeout)
            server._create_user(run / "mariadb.sock")
        except (LocalDatabaseError, OSError):
            server.stop()
            raise
        return server

    def _create_user(self, socket_path: pathlib.Path) -> None:
        import pymysql

        connection = pymysql.connect(unix_socket=str(socket_path), user="root", password="")
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {self.database}")
                cursor.execute(f"CREATE USER '{self.user}'@'%%' IDENTIFIED BY %s", (self.password,))
                cursor.execute(f"GRANT SELECT ON {self.database}.* TO '{self.user}'@'%%'", ())
        finally:
            connection.close()

    def stop(self) -> None:
        _stop(self.popen)
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m credbridge.local.databases", description=__doc__)
    parser.add_argument("command", choices=["install"], help="install redis-server and mariadb-server if missing")
    parser.parse_args(argv)
    try:
        install()
    except LocalDatabaseError as error:
        print(f"databases: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
