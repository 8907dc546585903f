"""A real Flowise with a real PostgreSQL as local processes, for tests, benchmarks and trying the
Flowise bridge by hand.

The bridge is about what a real Flowise does with a caller-chosen id, its permissions, its
`updatedDate` and its stored format, so tests run the `flowise` package from npm, not a fake:

- `ensure_installed()` runs `npm install flowise@<version> --ignore-scripts` once into
  `${XDG_CACHE_HOME:-~/.cache}/credbridge/flowise/<version>/` (about 3 GiB and several minutes;
  progress is printed) and reuses it afterwards. `--ignore-scripts` skips native builds Flowise
  does not need with PostgreSQL.
- `PostgresServer` runs PostgreSQL from Debian's `postgresql` package (`initdb`, `postgres` under
  /usr/lib/postgresql/<major>/bin) on a free port with a private data directory. PostgreSQL
  refuses to run as root, so under root it runs as the `postgres` user, in a directory that user
  owns.
- `FlowiseServer` runs `flowise start` on a free port against one database of that server, with
  the encryption key in `FLOWISE_SECRETKEY_OVERWRITE`; `start_flowise()` also registers the first
  admin and creates an API key through Flowise's own API.

Each type starts its process, waits until it answers (failing with the last lines of its log),
and stops it; with `die_with_parent` the kernel stops them if the Python process dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from credbridge.core import redaction
from credbridge.flowise import bootstrap
from credbridge.local import controlplane, npm

FLOWISE_VERSION = "3.1.4"
"""The Flowise release the tests and benchmarks run (DESIGN §2c was measured on it)."""
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
ADMIN_EMAIL = "admin@credbridge.test"


class LocalFlowiseError(RuntimeError):
    """Flowise or PostgreSQL could not be installed, found or started; the message says what to do."""


def cache_dir() -> pathlib.Path:
    """Where installed Flowise versions live, next to the control plane binaries."""
    return _package(FLOWISE_VERSION).directory


def _package(version: str) -> npm.NpmPackage:
    return npm.NpmPackage(
        "flowise",
        version,
        cache_name="flowise",
        marker="node_modules/.bin/flowise",
        size_hint="several minutes, ~3 GiB",
    )


@dataclasses.dataclass(frozen=True)
class FlowiseInstall:
    """An installed `flowise` npm package."""

    version: str
    root: pathlib.Path
    """The npm prefix: `node_modules/` is in it."""

    @property
    def program(self) -> pathlib.Path:
        return self.root / "node_modules" / ".bin" / "flowise"

    @property
    def node_modules(self) -> pathlib.Path:
        return self.root / "node_modules"


def ensure_installed(version: str = FLOWISE_VERSION, *, progress: bool = True) -> FlowiseInstall:
    """The cached install of `flowise@version`, made with npm first if it is missing (`credbridge.local.npm`)."""
    try:
        return FlowiseInstall(version, npm.ensure_package(_package(version), progress=progress))
    except npm.NpmInstallError as error:
        raise LocalFlowiseError(str(error)) from None


def _say(progress: bool, message: str) -> None:
    npm.say(progress, message)


def postgres_bin() -> pathlib.Path:
    """The bin directory of the newest PostgreSQL from Debian's packages."""
    found = sorted(pathlib.Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/")), key=lambda path: int(path.parent.name))
    for directory in reversed(found):
        if (directory / "initdb").exists() and (directory / "postgres").exists():
            return directory
    raise LocalFlowiseError(
        "PostgreSQL server programs were not found under /usr/lib/postgresql/<version>/bin: install them with "
        "`apt-get install postgresql` (Debian; the tests need initdb and postgres, not a running service)"
    )


def _spawn(
    name: str,
    argv: Sequence[str],
    log: pathlib.Path,
    *,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    cwd: pathlib.Path | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            start_new_session=True,
            preexec_fn=controlplane._die_with_parent if die_with_parent else None,  # noqa: PLW1509
        )


def _stop(popen: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Stops a process and everything in its process group (Node may leave children)."""
    if popen is None or popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(grace)


def _wait_until(
    name: str, popen: subprocess.Popen[bytes], log: pathlib.Path, timeout: float, ready: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise LocalFlowiseError(
                f"{name} exited with code {popen.returncode} while starting; last lines of {log}:\n"
                + controlplane._tail(log, 40)
            )
        if ready():
            return
        time.sleep(0.3)
    raise LocalFlowiseError(
        f"{name} was not ready after {timeout:.0f}s; last lines of {log}:\n" + controlplane._tail(log, 40)
    )


@dataclasses.dataclass
class PostgresServer:
    """One PostgreSQL server with a private data directory, listening on 127.0.0.1:`port`."""

    directory: pathlib.Path
    """Data directory, socket and log; owned by the user the server runs as."""
    port: int
    password: redaction.Redacted
    """Password of the `postgres` superuser (scram-sha-256 over TCP)."""
    user: str | None
    """The OS user the server runs as (`postgres` under root, else None: the current user)."""
    popen: subprocess.Popen[bytes] | None = None

    host = "127.0.0.1"
    superuser = "postgres"

    @property
    def log(self) -> pathlib.Path:
        return self.directory / "postgres.log"

    @classmethod
    def start(cls, *, timeout: float = 60.0, die_with_parent: bool = True) -> PostgresServer:
        """initdb a fresh cluster in a new directory under the system temp dir and start it."""
        binaries = postgres_bin()
        user = "postgres" if os.geteuid() == 0 else None
        # pytest's temporary directories are private to root; PostgreSQL's user must own its own.
        directory = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-postgres-"))
        server = cls(directory, controlplane.free_port(), redaction.Redacted(secrets.token_urlsafe(18)), user)
        try:
            if user is not None:
                try:
                    account = pwd.getpwnam(user)
                except KeyError:
                    raise LocalFlowiseError(
                        "PostgreSQL refuses to run as root and there is no `postgres` user: install Debian's "
                        "`postgresql` package (it creates the user) or run the tests as another user"
                    ) from None
                os.chown(directory, account.pw_uid, account.pw_gid)
            password_file = directory / "pwfile"
            password_file.write_text(server.password.reveal() + "\n")
            if user is not None:
                os.chown(password_file, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            password_file.chmod(0o600)
            initdb = subprocess.run(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(directory / "data"),
                    "-U",
                    cls.superuser,
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--no-sync",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                user=user,
                capture_output=True,
                text=True,
                check=False,
            )
            password_file.unlink()
            if initdb.returncode != 0:
                raise LocalFlowiseError(f"initdb failed with exit code {initdb.returncode}:\n{initdb.stderr[-2000:]}")
            server.popen = _spawn(
                "postgres",
                [
                    str(binaries / "postgres"),
                    "-D",
                    str(directory / "data"),
                    "-p",
                    str(server.port),
                    "-k",
                    str(directory),
                    "-c",
                    f"listen_addresses={cls.host}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "max_connections=100",
                ],
                server.log,
                user=user,
                cwd=directory,
                die_with_parent=die_with_parent,
            )
            if user is not None:
                os.chown(server.log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            _wait_until("postgres", server.popen, server.log, timeout, lambda: server._accepts(binaries))
        except BaseException:
            server.stop()
            raise
        return server

    def _accepts(self, binaries: pathlib.Path) -> bool:
        result = subprocess.run(
            [str(binaries / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", self.superuser, "-q"],
            check=False,
        )
        return result.returncode == 0

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password.reveal(), "PGHOST": self.host, "PGPORT": str(self.port)}

    def create_database(self, name: str) -> None:
        """Creates an empty database `name` owned by the superuser."""
        result = subprocess.run(
            [str(postgres_bin() / "createdb"), "-U", self.superuser, name],
            env=self._client_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise LocalFlowiseError(f"createdb {name} failed: {result.stderr.strip()}")

    def psql(self, database: str, sql: str) -> str:
        """Runs SQL with psql and returns its unaligned, tuples-only output (for tests)."""
        result = subprocess.run(
            [
                str(postgres_bin() / "psql"),
                "-U",
                self.superuser,
                "-d",
                database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            env=self._client_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise LocalFlowiseError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        """Stops the server (fast shutdown) and removes its directory."""
        _stop(self.popen, signal.SIGINT)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclasses.dataclass
class FlowiseServer:
    """One Flowise server process on 127.0.0.1:`port`, its database, key and admin API key."""

    install: FlowiseInstall
    workdir: pathlib.Path
    port: int
    postgres: PostgresServer
    database: str
    secret_key: redaction.Redacted
    """The encryption key (`FLOWISE_SECRETKEY_OVERWRITE`): what `credbridge import flowise` needs."""
    die_with_parent: bool = True
    api_key: redaction.Redacted | None = None
    """An API key with every `credentials:*` permission, made at start."""
    admin: bootstrap.AdminSession | None = None
    admin_password: redaction.Redacted = dataclasses.field(
        default_factory=lambda: redaction.Redacted(secrets.token_urlsafe(16) + "aA1!")
    )
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """More variables for Flowise (e.g. to let its OAuth2 refresh reach a local test provider)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> pathlib.Path:
        return self.workdir / "flowise.log"

    def environment(self) -> dict[str, str]:
        """The variables Flowise starts with (DESIGN §2c): port, database, encryption key, private dirs."""
        home = self.workdir / "home"
        for directory in (home, self.workdir / "secrets", self.workdir / "logs", self.workdir / "storage"):
            directory.mkdir(parents=True, exist_ok=True)
        keep = {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "TZ", "NODE_OPTIONS")}
        return {
            **keep,
            "HOME": str(home),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DATABASE_TYPE": "postgres",
            "DATABASE_HOST": self.postgres.host,
            "DATABASE_PORT": str(self.postgres.port),
            "DATABASE_USER": self.postgres.superuser,
            "DATABASE_PASSWORD": self.postgres.password.reveal(),
            "DATABASE_NAME": self.database,
            "FLOWISE_SECRETKEY_OVERWRITE": self.secret_key.reveal(),
            "SECRETKEY_PATH": str(self.workdir / "secrets"),
            "LOG_PATH": str(self.workdir / "logs"),
            "BLOB_STORAGE_PATH": str(self.workdir / "storage"),
            "DISABLE_FLOWISE_TELEMETRY": "true",
            "NUMBER_OF_PROXIES": "0",
            **self.extra_env,
        }

    def start_process(self, timeout: float = 180.0) -> None:
        """Starts `flowise start` and waits until `/api/v1/ping` answers."""
        self.starts += 1
        with self.log.open("ab") as handle:
            handle.write(f"---- credbridge: start #{self.starts} ----\n".encode())
        self.popen = _spawn(
            "flowise",
            [str(self.install.program), "start"],
            self.log,
            env=self.environment(),
            cwd=self.workdir,
            die_with_parent=self.die_with_parent,
        )
        _wait_until("flowise", self.popen, self.log, timeout, self._pong)

    def _pong(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/ping", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop_process(self) -> None:
        """Stops Flowise (its database stays)."""
        _stop(self.popen)
        self.popen = None

    def restart(self) -> None:
        """Stops and starts Flowise on the same port and database."""
        self.stop_process()
        self.start_process()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def start_flowise(
    workdir: pathlib.Path,
    postgres: PostgresServer,
    *,
    install: FlowiseInstall | None = None,
    database: str | None = None,
    secret_key: redaction.Redacted | None = None,
    die_with_parent: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> FlowiseServer:
    """Starts a Flowise on a fresh database of `postgres`, registers its first admin and makes an API key."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = FlowiseServer(
        install=install or ensure_installed(),
        workdir=workdir,
        port=controlplane.free_port(),
        postgres=postgres,
        database=database or f"flowise_{secrets.token_hex(4)}",
        secret_key=secret_key or redaction.Redacted(secrets.token_urlsafe(24)),
        die_with_parent=die_with_parent,
        extra_env=dict(extra_env or {}),
    )
    try:
        postgres.create_database(server.database)
        server.start_process()
        server.admin, server.api_key = bootstrap.first_admin_with_key(
            server.url, email=ADMIN_EMAIL, password=server.admin_password
        )
    except BaseException:
        server.stop_process()
        raise
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m credbridge.local.flowise install`: what `make flowise` runs before the Flowise tests.

    Installs the flowise npm package into the cache (once) and checks that PostgreSQL's server
    programs are there, explaining how to install what is missing.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments != ["install"]:
        print("usage: python -m credbridge.local.flowise install", file=sys.stderr)
        return 2
    try:
        install = ensure_installed()
        binaries = postgres_bin()
    except LocalFlowiseError as error:
        print(f"credbridge: {error}", file=sys.stderr)
        return 1
    _say(True, f"flowise@{install.version} in {install.root}; PostgreSQL programs in {binaries}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
