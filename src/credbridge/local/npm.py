"""npm packages installed once per version into credbridge's cache, for the real services tests run.

The Flowise tests run the `flowise` package and the OAuth2 tests the `oidc-provider` package; both
are installed the same way: `npm install <package>@<version> --ignore-scripts` into
`${XDG_CACHE_HOME:-~/.cache}/credbridge/<cache name>/<version>/`, through a staging directory that
is renamed when npm succeeded (an interrupted install is never mistaken for a finished one), under
a lock file (two sessions never install at once), printing progress while npm works.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

from credbridge.local import controlplane


class NpmInstallError(RuntimeError):
    """npm is missing or the install failed; the message says what to do."""


def cache_root() -> pathlib.Path:
    """Where credbridge caches what it installs (next to the control plane binaries)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "credbridge"


@dataclasses.dataclass(frozen=True)
class NpmPackage:
    """One package at one version, and where its cached install lives."""

    name: str
    version: str
    cache_name: str
    """Directory under the cache root: installs are `<cache root>/<cache_name>/<version>/`."""
    marker: str
    """A path inside the install that exists only when npm finished (e.g. `node_modules/.bin/flowise`)."""
    size_hint: str = ""
    """What the first install costs, printed before it starts (e.g. `several minutes, ~3 GiB`)."""

    @property
    def directory(self) -> pathlib.Path:
        return cache_root() / self.cache_name

    @property
    def root(self) -> pathlib.Path:
        """The npm prefix: `node_modules/` is in it."""
        return self.directory / self.version

    @property
    def installed(self) -> bool:
        return (self.root / self.marker).exists()


def ensure_package(package: NpmPackage, *, progress: bool = True) -> pathlib.Path:
    """The cached install of `package` (its npm prefix), made with npm first if it is missing."""
    if package.installed:
        return package.root
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise NpmInstallError(
            f"the tests' {package.name} needs Node.js and npm (Debian: `apt-get install nodejs npm`); "
            "neither was found on PATH"
        )
    package.directory.mkdir(parents=True, exist_ok=True)
    with (package.directory / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if package.installed:
            return package.root  # another session finished it while we waited
        staging = package.directory / f".staging-{package.version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "package.json").write_text(f'{{"name": "credbridge-{package.cache_name}-cache", "private": true}}\n')
        log = package.directory / f"install-{package.version}.log"
        hint = f" (first time only: {package.size_hint})" if package.size_hint else ""
        say(progress, f"installing {package.name}@{package.version} with npm into {package.root}{hint}; log {log}")
        started = time.monotonic()
        done = threading.Event()
        ticker = threading.Thread(
            target=_report_install, args=(package.name, staging, started, done, progress), daemon=True
        )
        ticker.start()
        with log.open("wb") as handle:
            result = subprocess.run(
                [
                    npm,
                    "install",
                    f"{package.name}@{package.version}",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                ],
                cwd=staging,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        done.set()
        if result.returncode != 0:
            raise NpmInstallError(
                f"npm install {package.name}@{package.version} failed with exit code {result.returncode}; "
                f"last lines of {log}:\n" + controlplane._tail(log)
            )
        staging.rename(package.root)
        say(progress, f"{package.name}@{package.version} installed in {time.monotonic() - started:.0f}s")
    return package.root


def _report_install(name: str, staging: pathlib.Path, started: float, done: threading.Event, progress: bool) -> None:
    while not done.wait(20):
        modules = staging / "node_modules"
        count = sum(1 for _ in modules.iterdir()) if modules.exists() else 0
        say(progress, f"  ... npm still installing {name}: {count} packages after {time.monotonic() - started:.0f}s")


def say(progress: bool, message: str) -> None:
    """Prints a progress line on stderr (when `progress`)."""
    if progress:
        print(f"credbridge: {message}", file=sys.stderr, flush=True)
