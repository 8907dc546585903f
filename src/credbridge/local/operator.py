"""Run `credbridge run` as a real process against a cluster, for tests, benchmarks and the demo.

The operator runs as its own process (not inside the test's event loop) so tests see exactly what
users get: its command line, its environment, its logs and its restart behaviour.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from credbridge.local import controlplane


@dataclasses.dataclass
class OperatorProcess:
    """A running operator process and where its logs and ports are."""

    popen: subprocess.Popen[bytes]
    log: pathlib.Path
    health_port: int
    metrics_port: int
    webhook_port: int
    endpoint_port: int = 0
    """Port of the workload read endpoint on 127.0.0.1 (0: turned off)."""

    def logs(self) -> str:
        """Everything the operator wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def metrics(self) -> str:
        """The Prometheus text the operator exposes right now."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def stop(self, grace: float = 20.0) -> int:
        """Stop the operator as Kubernetes would (SIGTERM, then SIGKILL) and return its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(grace)
        return int(self.popen.returncode)


def start(
    kubeconfig: pathlib.Path,
    log: pathlib.Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60.0,
    wait_ready: bool = True,
    die_with_parent: bool = True,
) -> OperatorProcess:
    """Start `credbridge run` with `args` and extra `env`; wait until its health endpoint answers."""
    health, metrics, webhook, endpoint = (controlplane.free_port() for _ in range(4))
    if "--endpoint-port" in args:
        endpoint = int(args[list(args).index("--endpoint-port") + 1])
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("CRED_", "CREDBRIDGE_"))}
    environment.update({"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"})
    environment.update(env or {})
    argv = [
        sys.executable,
        "-m",
        "credbridge.cli.main",
        "run",
        "--health-port",
        str(health),
        "--metrics-port",
        str(metrics),
        *(["--webhook-port", str(webhook)] if "--webhook-port" not in args else []),
        *(["--endpoint-port", str(endpoint)] if "--endpoint-port" not in args else []),
        *args,
    ]
    popen = controlplane.start_logged(argv, log, env=environment, die_with_parent=die_with_parent)
    process = OperatorProcess(popen, log, health, metrics, webhook, endpoint)
    if wait_ready:
        wait_until_ready(process, ready_timeout)
    return process


def wait_until_ready(process: OperatorProcess, timeout: float) -> None:
    """Poll the operator's health endpoint; fail with its log tail if it exits or stays down."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{process.health_port}/healthz"
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"the operator exited with code {process.popen.returncode}; last lines of its log:\n"
                + "\n".join(process.logs().splitlines()[-40:])
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"the operator did not become healthy within {timeout:.0f}s; last lines of its log:\n"
        + "\n".join(process.logs().splitlines()[-40:])
    )
